/**
 * A leader election over BroadcastChannel, for browsers with BroadcastChannel but without the
 * Web Locks API. It offers the one call of `navigator.locks` the client uses,
 * `request(name, {signal}, callback)`: at most one tab of the origin runs `callback` for a
 * name at a time (in the absence of a split brain, see below), the others wait and take over
 * when it returns or its tab goes away.
 *
 * - A waiting tab asks (`probe`) and listens for the holder's `alive`, sent every `aliveMs`.
 * - No holder heard for `deadMs` (or none answering the probe, or a `release`): it sends
 *   `claim` and listens `settleMs`; an `alive` or a claim from a lower tab id in that window
 *   makes it wait again, otherwise it holds the lock.
 * - The holder answers probes and claims with `alive`, and sends `release` when `callback`
 *   returns or its page is hidden for good (`pagehide`).
 *
 * Unlike Web Locks this cannot be exact: a holder whose timers the browser throttles beyond
 * `deadMs` can be taken over while it still runs, and then two tabs hold connections (each
 * message still reaches every tab once: tabs de-duplicate by (channel, epoch, offset)). The
 * holder that hears another holder with a lower id says nothing more, so the others follow
 * that one; its own connection lasts until its tab closes or disconnects.
 */

type Vote =
  | { kind: "probe"; id: string }
  | { kind: "claim"; id: string }
  | { kind: "alive"; id: string }
  | { kind: "release"; id: string };

export interface ElectionTimings {
  /** The holder says `alive` this often (ms). */
  aliveMs: number;
  /** A holder not heard for this long is gone (ms). */
  deadMs: number;
  /** A claim wins when nothing contradicts it for this long (ms); also the probe's wait. */
  settleMs: number;
}

export const ELECTION_TIMINGS: ElectionTimings = Object.freeze({ aliveMs: 1000, deadMs: 3500, settleMs: 150 });

export class BroadcastLock {
  constructor(private readonly Channel: typeof BroadcastChannel, private readonly id: () => string,
    private readonly timings: ElectionTimings = ELECTION_TIMINGS) {}

  request(name: string, options: { signal?: AbortSignal }, callback: () => Promise<void>): Promise<void> {
    const { aliveMs, deadMs, settleMs } = this.timings;
    const me = this.id();
    const bus = new this.Channel(`${name}:election`);
    let role: "waiting" | "claiming" | "holding" | "done" = "waiting";
    let heard = 0; // when a holder (or a stronger claim) was last heard; 0: none yet
    let settle: ReturnType<typeof setTimeout> | undefined;
    let check: ReturnType<typeof setInterval> | undefined;
    let alive: ReturnType<typeof setInterval> | undefined;
    const say = (kind: Vote["kind"]) => { try { bus.postMessage({ kind, id: me } satisfies Vote); } catch { /* closed */ } };
    const pagehide = () => { if (role === "holding") say("release"); };

    return new Promise<void>((resolve, reject) => {
      const finish = (error?: unknown) => {
        if (role === "done") return;
        if (role === "holding") say("release");
        role = "done";
        clearTimeout(settle);
        clearInterval(check);
        clearInterval(alive);
        options.signal?.removeEventListener("abort", aborted);
        (globalThis as { removeEventListener?: typeof removeEventListener }).removeEventListener?.("pagehide", pagehide);
        bus.close();
        if (error === undefined) resolve();
        else reject(error);
      };
      const aborted = () => {
        if (role !== "holding") finish(new DOMException("the lock request was aborted", "AbortError"));
      };
      if (options.signal?.aborted) { aborted(); return; }
      options.signal?.addEventListener("abort", aborted);

      const claim = () => {
        if (role !== "waiting") return;
        role = "claiming";
        say("claim");
        settle = setTimeout(() => {
          if (role !== "claiming") return;
          role = "holding";
          clearInterval(check);
          say("alive");
          alive = setInterval(() => say("alive"), aliveMs);
          (globalThis as { addEventListener?: typeof addEventListener }).addEventListener?.("pagehide", pagehide);
          Promise.resolve().then(callback).then(() => finish(), (error) => finish(error));
        }, settleMs);
      };
      const yieldTo = () => {
        heard = Date.now();
        if (role === "claiming") {
          clearTimeout(settle);
          role = "waiting";
        }
      };

      bus.onmessage = (event: MessageEvent<Vote>) => {
        const vote = event.data;
        if (!vote || typeof vote !== "object" || vote.id === me || role === "done") return;
        if (role === "holding") {
          if (vote.kind === "probe" || vote.kind === "claim") say("alive");
          else if (vote.kind === "alive" && vote.id < me) clearInterval(alive); // a split brain: let it lead
          return;
        }
        if (vote.kind === "alive") yieldTo();
        else if (vote.kind === "claim" && vote.id < me) yieldTo();
        else if (vote.kind === "release") { heard = 0; claim(); }
      };

      say("probe");
      settle = setTimeout(() => { if (!heard) claim(); }, settleMs);
      check = setInterval(() => {
        if (role === "waiting" && heard && Date.now() - heard > deadMs) claim();
      }, aliveMs);
    });
  }
}
