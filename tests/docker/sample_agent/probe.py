"""What an agent can see from inside its container: the isolation test's witness."""

import os
import socket
import time

from papayya import agent


def attempt(fn):
    try:
        return fn()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def connect(port: int):
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return "connected"


def write(path: str):
    with open(path, "w") as f:
        f.write("x")
    return "written"


def status(field: str) -> str:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    return ""


@agent
def probe(task):
    with open("/proc/net/route") as f:
        routes = f.read().splitlines()[1:]
    with open("/proc/net/dev") as f:
        interfaces = sorted(line.split(":")[0].strip() for line in f.readlines()[2:])
    secrets = [k for k, v in os.environ.items() if task["secret"] in v]
    found = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "env": sorted(os.environ),
        "secret_in_env": secrets,
        "routes": routes,
        "interfaces": interfaces,
        "host_api": attempt(lambda: connect(task["api_port"])),
        "write_root": attempt(lambda: write("/app/owned.txt")),
        "write_tmp": attempt(lambda: write("/tmp/scratch.txt")),
        "cap_eff": status("CapEff"),
        "no_new_privs": status("NoNewPrivs"),
        "cwd": os.getcwd(),
    }
    time.sleep(task.get("linger", 0))
    return found
