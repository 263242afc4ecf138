"use client";
import { createContext, useCallback, useContext, useEffect, useState, type ReactNode } from "react";
import { usePathname, useRouter } from "next/navigation";
import type { TokenRequest } from "@renum/realtime";
import { RealtimeProvider, useConnectionState } from "@renum/realtime-react";
import { accessToken, signedInUser, signOut } from "./auth";

const ApiUrl = createContext("");

/** The REST API's base URL (RENUM_API_URL, read by the server layout). */
export function useApiUrl(): string {
  return useContext(ApiUrl);
}

/** Sends the user to the sign-in page, with the reason, when the realtime client gives up on the credentials. */
function SignedOutRedirect() {
  const { state, info } = useConnectionState();
  const router = useRouter();
  useEffect(() => {
    if (state !== "unauthorized") return;
    signOut();
    const reason = info.cause === "account_deactivated" ? "your account has been deactivated"
      : info.reason || "your session has ended";
    router.replace(`/signin?reason=${encodeURIComponent(reason)}`);
  }, [state, info, router]);
  return null;
}

export function Providers({ apiUrl, children }: { apiUrl: string; children: ReactNode }) {
  const pathname = usePathname();
  const router = useRouter();
  // Read after mount (sessionStorage does not exist during server rendering), on every render:
  // signing in or out changes it without changing any React state.
  const [mounted, setMounted] = useState(false);
  useEffect(() => { setMounted(true); }, []);
  const user = mounted ? signedInUser() : undefined;
  useEffect(() => {
    if (user === null && pathname !== "/signin") router.replace("/signin");
  }, [user, pathname, router]);

  const getToken = useCallback((request: TokenRequest) => accessToken(apiUrl, request), [apiUrl]);
  if (pathname === "/signin") return <ApiUrl.Provider value={apiUrl}>{children}</ApiUrl.Provider>;
  // Signed-in pages render once the session is known (after mount; null: on the way to sign-in).
  if (!user) return null;
  const socketUrl = apiUrl.replace(/^http/, "ws") + "/ws/";
  return (
    <ApiUrl.Provider value={apiUrl}>
    <RealtimeProvider url={socketUrl} apiUrl={apiUrl} getToken={getToken} sessionKey={user}
      options={(globalThis as { RENUM_REALTIME_OPTIONS?: object }).RENUM_REALTIME_OPTIONS}>
      <SignedOutRedirect />
      {children}
    </RealtimeProvider>
    </ApiUrl.Provider>
  );
}
