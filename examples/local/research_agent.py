"""A research agent on the local path: your own process, checkpointed and metered.

Two checkpointed tasks around one model call. Run it again with the same run id after a
crash and the finished tasks and the model call are answered from the recording.

    papayya dev fake-llm &                      # a fake OpenAI/Anthropic API on :8765
    export PAPAYYA_OPENAI_BASE_URL=http://127.0.0.1:8765/v1 PAPAYYA_OPENAI_API_KEY=sk-fake
    python examples/local/research_agent.py research-1 "durable execution"

Direct mode (``PAPAYYA_DATABASE_URL``, or the embedded Postgres) or HTTP mode
(``PAPAYYA_BASE_URL`` and ``PAPAYYA_API_KEY``: model calls then go through the server's
gateway with the server's provider key). ``RESEARCH_PAUSE_SECONDS`` waits between the model
call and the last task (to try a crash); ``RESEARCH_LOG`` names a file each task that really
runs appends its name to.
"""

from __future__ import annotations

import os
import sys
import time

from papayya import papayya

MODEL = os.environ.get("RESEARCH_MODEL", "gpt-4o-mini")


def note(name: str) -> None:
    log = os.environ.get("RESEARCH_LOG")
    if log:
        with open(log, "a") as f:
            f.write(name + "\n")


def search(topic: str) -> list[str]:
    note("search")
    return [f"{topic}: an overview", f"{topic}: a case study"]


def report(topic: str, summary: str) -> dict[str, str]:
    note("report")
    return {"topic": topic, "summary": summary}


def main(run_id: str | None, topic: str) -> None:
    pause = float(os.environ.get("RESEARCH_PAUSE_SECONDS", "0"))
    with papayya() as client:
        with client.run("researcher", run_id=run_id, budget_usd="0.50", input=topic) as run:
            sources = run.task("search", search)(topic)
            answer = run.openai().chat.completions.create(
                model=MODEL,
                max_tokens=200,
                messages=[{"role": "user", "content": f"Summarise: {'; '.join(sources)}"}],
            )
            summary = answer.choices[0].message.content or ""
            print(f"summarised {run.id}", flush=True)
            time.sleep(pause)
            result = run.task(report)(topic, summary)
            run.complete(result)
            print(f"done {run.id}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None, " ".join(sys.argv[2:]) or "durable execution")
