"""A deployed agent: the official openai SDK with no base URL or key of its own, one tool,
one checkpoint. With ``{"pause": true}`` its first attempt sleeps after the checkpoint (a
window for a test to kill its container); later attempts do not."""

import json
import os
import time
import urllib.request

from openai import OpenAI

from papayya import agent, current_run, tool


@tool
def lookup(city: str) -> dict:
    """Look up the weather of a city."""
    return {"city": city, "temp": 21}


def attempt() -> int:
    """This attempt's number, from the runtime API (the gateway's base URL is its host)."""
    base = os.environ["OPENAI_BASE_URL"].removesuffix("/v1/llm/openai")
    request = urllib.request.Request(
        f"{base}/v1/runtime/run",
        headers={"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(json.load(response)["attempt"])


@agent
def weather(task):
    client = OpenAI(max_retries=0)
    messages = [{"role": "user", "content": task["question"]}]
    first = client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[lookup.schema()]
    )
    message = first.choices[0].message
    call = message.tool_calls[0]
    result = lookup(**json.loads(call.function.arguments))
    messages += [
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)},
    ]
    counted = current_run().task("count", lambda: len(messages))
    if task.get("pause") and attempt() == 1:
        print("paused", flush=True)
        time.sleep(600)
    final = client.chat.completions.create(model="gpt-4o", messages=messages)
    return {"answer": final.choices[0].message.content, "counted": counted}
