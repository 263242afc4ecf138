"use client";
import { useEffect, useState } from "react";
import { type Execution } from "@renum/realtime";
import { useRealtime, useTeamExecutions } from "@renum/realtime-react";
import { Nav } from "../nav";

interface Team {
  id: number;
  name: string;
}

function ProgressBar({ execution }: { execution: Execution }) {
  return (
    <li data-execution={execution.id} data-status={execution.status}>
      <progress max={100} value={execution.progress} aria-label={`Execution ${execution.id}`} />
      <span className="percent">{execution.progress} %</span> <span>{execution.status}</span>
      {execution.currentStep ? <span> · {execution.currentStep}</span> : null}
    </li>
  );
}

export default function ExecutionsPage() {
  const { api } = useRealtime();
  const [teams, setTeams] = useState<Team[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api<Team[]>("/api/teams/").then(setTeams, (caught: Error) => setError(caught.message));
  }, [api]);
  const team = teams?.[0] ?? null;
  const { executions } = useTeamExecutions(team?.id ?? null);

  async function start() {
    if (!team) return;
    try {
      await api("/api/executions/", { method: "POST", body: JSON.stringify({ team: team.id }) });
    } catch (caught) {
      setError((caught as Error).message);
    }
  }

  return (
    <main>
      <Nav />
      <h1>Executions</h1>
      {error ? <p role="alert">{error}</p> : null}
      {teams && !team ? <p>You are in no team: nothing to run.</p> : null}
      {team ? <button type="button" onClick={start}>Start an execution of {team.name}</button> : null}
      <ul id="executions">{executions.map((execution) => <ProgressBar key={execution.id} execution={execution} />)}</ul>
    </main>
  );
}
