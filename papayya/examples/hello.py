"""A first agent for a fresh server: two checkpointed steps and no model call, so it needs
no provider key. ``papayya server`` suggests it at start where the process runtime is on:

    papayya agents register papayya/examples/hello.py --agent hello
    papayya run hello --input '{"name": "Ada"}' --wait
"""

from papayya import agent, current_run


# agentapi is standard library only and leaves @agent untyped.
@agent  # type: ignore[untyped-decorator]
def hello(task: dict[str, str]) -> dict[str, object]:
    run = current_run()
    greeting = run.task("greet", lambda: f"Hello, {task.get('name', 'world')}!")
    letters = run.task("count", lambda: sum(c.isalpha() for c in greeting))
    return {"greeting": greeting, "letters": letters}
