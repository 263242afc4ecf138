"use client";
import { useRealtime } from "@renum/realtime-react";
import { Nav } from "./nav";

export default function Home() {
  const { client } = useRealtime();
  return (
    <main>
      <Nav />
      <h1>Renum realtime</h1>
      <p>Notifications arrive in the bell; executions run on the executions page.</p>
      <p data-testid="client-id">{client?.clientId ?? ""}</p>
    </main>
  );
}
