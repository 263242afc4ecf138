"use client";
import { Suspense, useState, type FormEvent } from "react";
import { useRouter, useSearchParams } from "next/navigation";
import { signIn } from "../auth";
import { useApiUrl } from "../providers";

function SignInForm() {
  const router = useRouter();
  const reason = useSearchParams().get("reason");
  const [error, setError] = useState<string | null>(null);
  const apiUrl = useApiUrl();

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    try {
      await signIn(apiUrl, String(form.get("username")), String(form.get("password")));
      router.replace("/");
    } catch (caught) {
      setError((caught as Error).message);
    }
  }

  return (
    <form onSubmit={submit} aria-label="Sign in">
      <h1>Sign in</h1>
      {reason ? <p id="signin-reason" role="alert">You were signed out: {reason}.</p> : null}
      {error ? <p role="alert">{error}</p> : null}
      <label>Username <input name="username" autoComplete="username" required /></label>
      <label>Password <input name="password" type="password" autoComplete="current-password" required /></label>
      <button type="submit">Sign in</button>
    </form>
  );
}

export default function SignInPage() {
  return <Suspense><SignInForm /></Suspense>;
}
