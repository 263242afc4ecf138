"use client";
/**
 * The session of the example: the JWT pair from `POST /api/auth/token/`, kept in sessionStorage
 * (one tab's session; a real app chooses its own storage). `accessToken()` is what the realtime
 * client's `getToken` calls: a cached token for `connect`, a refreshed one otherwise; it throws
 * when the refresh token is refused, which sends the user to the sign-in page with the reason.
 */
import { decodeJwt, type TokenRequest } from "@renum/realtime";

const ACCESS = "renum.access";
const REFRESH = "renum.refresh";

export class SessionEnded extends Error {}

export async function signIn(apiUrl: string, username: string, password: string): Promise<void> {
  const response = await fetch(`${apiUrl}/api/auth/token/`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.detail ?? `sign-in failed (${response.status})`);
  }
  const { access, refresh } = await response.json();
  sessionStorage.setItem(ACCESS, access);
  sessionStorage.setItem(REFRESH, refresh);
}

export function signOut(): void {
  sessionStorage.removeItem(ACCESS);
  sessionStorage.removeItem(REFRESH);
}

export function signedInUser(): string | null {
  const access = sessionStorage.getItem(ACCESS);
  const claims = access ? decodeJwt(access) : null;
  return claims?.user_id != null ? String(claims.user_id) : null;
}

export async function accessToken(apiUrl: string, { reason }: Pick<TokenRequest, "reason">): Promise<string> {
  const access = sessionStorage.getItem(ACCESS);
  const claims = access ? decodeJwt(access) : null;
  if (access && reason === "connect" && claims?.exp && claims.exp * 1000 - Date.now() > 30_000) return access;
  const refresh = sessionStorage.getItem(REFRESH);
  if (!refresh) throw new SessionEnded("you are not signed in");
  const response = await fetch(`${apiUrl}/api/auth/token/refresh/`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh }),
  });
  if (!response.ok) {
    signOut();
    throw new SessionEnded("your session has expired and could not be renewed");
  }
  const body = await response.json();
  sessionStorage.setItem(ACCESS, body.access);
  if (body.refresh) sessionStorage.setItem(REFRESH, body.refresh);
  return body.access;
}
