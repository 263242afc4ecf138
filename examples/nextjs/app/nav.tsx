"use client";
import Link from "next/link";
import { NotificationBell } from "@renum/realtime-react";

export function Nav() {
  return (
    <nav style={{ display: "flex", gap: "1rem", alignItems: "center", marginBottom: "1rem" }}>
      <Link href="/">Home</Link>
      <Link href="/executions">Executions</Link>
      <NotificationBell pageSize={20} maxItems={100} maxToasts={3} />
    </nav>
  );
}
