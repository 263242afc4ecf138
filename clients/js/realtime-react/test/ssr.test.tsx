// @vitest-environment node
import { renderToString } from "react-dom/server";
import { expect, it } from "vitest";

it("imports and renders on the server without window", async () => {
  expect(typeof (globalThis as { window?: unknown }).window).toBe("undefined");
  const { NotificationBell, RealtimeProvider } = await import("../src/index.js");
  const html = renderToString(
    <RealtimeProvider url="ws://api.test/ws/" getToken={() => "tok"}><NotificationBell /></RealtimeProvider>,
  );
  expect(html).toContain('data-state="idle"');
  expect(html).toContain("Notifications, 0 unread");
});
