import type { ReactNode } from "react";
import { Providers } from "./providers";

// Rendered per request: RENUM_API_URL is read when the server runs, not when it is built.
export const dynamic = "force-dynamic";

export const metadata = { title: "Renum realtime: Next.js example" };

export default function RootLayout({ children }: { children: ReactNode }) {
  const apiUrl = (process.env.RENUM_API_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");
  return (
    <html lang="en">
      <body style={{ fontFamily: "system-ui, sans-serif", margin: "1.5rem" }}>
        <Providers apiUrl={apiUrl}>{children}</Providers>
      </body>
    </html>
  );
}
