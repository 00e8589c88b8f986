"""Agent sources that tests deploy into a workspace and run with the process runtime."""

from __future__ import annotations

# AGENT asks the model, calls a tool (whose side effect lands in $SIDE_EFFECTS), checkpoints a
# task and asks again; CRASH_BEFORE_ANSWER kills its process before the second call.
AGENT = '''
import json, os
from openai import OpenAI
from papayya import agent, current_run, tool

@tool
def lookup(city: str) -> dict:
    """Look up the weather of a city."""
    with open(os.environ["SIDE_EFFECTS"], "a") as f:
        f.write(city + "\\n")
    return {"city": city, "temp": 21}

@agent
def weather(task):
    client = OpenAI(max_retries=0)
    messages = [{"role": "user", "content": task["question"]}]
    first = client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[lookup.schema()])
    message = first.choices[0].message
    call = message.tool_calls[0]
    result = lookup(**json.loads(call.function.arguments))
    messages += [message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}]
    counted = current_run().task("count", lambda: len(messages))
    if os.environ.get("CRASH_BEFORE_ANSWER"):
        os._exit(3)
    final = client.chat.completions.create(model="gpt-4o", messages=messages)
    return {"answer": final.choices[0].message.content, "counted": counted}
'''

# SLOW checkpoints ``steps`` tasks that each sleep ``sleep`` seconds, then writes "done".
SLOW = """
import os, time
from papayya import agent, current_run

@agent
def slow(task):
    for i in range(int(task.get("steps", 1))):
        current_run().task(f"step{i}", lambda: time.sleep(float(task.get("sleep", 0.5))) or i)
    with open(os.environ["SIDE_EFFECTS"], "a") as f:
        f.write("done\\n")
    return {"slept": True}
"""
