"""Drives the FortiAnalyzer SSH console with paramiko's invoke_shell, line by line, the way a
trainee types the seed article's commands. Prints one JSON object with what it saw.

Environment: FAZ_SSH_HOST, FAZ_SSH_PORT, FAZ_USER, FAZ_PASSWORD.
"""
import json
import os
import re
import time

import paramiko

HOST = os.environ["FAZ_SSH_HOST"]
PORT = int(os.environ["FAZ_SSH_PORT"])
USER = os.environ["FAZ_USER"]
PASSWORD = os.environ["FAZ_PASSWORD"]
PROMPT = re.compile(r"[A-Za-z0-9_.-]+ (\([^)]*\))?# $")


def read_until_prompt(chan, timeout=20.0):
    """Reads until the output ends with a prompt; returns (output, prompt)."""
    buf = ""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if chan.recv_ready():
            buf += chan.recv(65536).decode("utf-8", "replace")
            text = buf.replace("\r", "")
            last = text.split("\n")[-1]
            m = PROMPT.search(last)
            if m and last.endswith("# "):
                return text, last
        else:
            time.sleep(0.01)
    raise TimeoutError("no prompt; got %r" % buf)


def read_until_suffix(chan, suffix, timeout=20.0):
    """Reads until the output (without CRs) ends with `suffix`."""
    buf = ""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if chan.recv_ready():
            buf += chan.recv(65536).decode("utf-8", "replace")
            if buf.replace("\r", "").endswith(suffix):
                return buf.replace("\r", "")
        else:
            time.sleep(0.01)
    raise TimeoutError("no %r; got %r" % (suffix, buf))


def send(chan, line):
    chan.send(line + "\n")
    out, prompt = read_until_prompt(chan)
    return out, prompt


result = {}

# A wrong password is refused. (Transport.auth_password without the keyboard-interactive
# fallback: SSHClient's fallback waits for paramiko's 30 s auth timeout on this server.)
bad = paramiko.Transport((HOST, PORT))
try:
    bad.connect()
    bad.auth_password(USER, "wrong-" + PASSWORD, fallback=False)
    result["bad_password_refused"] = False
except paramiko.AuthenticationException:
    result["bad_password_refused"] = True
finally:
    bad.close()

client = paramiko.SSHClient()
client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
client.connect(HOST, port=PORT, username=USER, password=PASSWORD,
               look_for_keys=False, allow_agent=False, timeout=20)
chan = client.invoke_shell(width=200)
_, prompt = read_until_prompt(chan)
result["prompts"] = [prompt]
for line in ["config system global", "set jsonapi-log all", "end"]:
    out, prompt = send(chan, line)
    result["prompts"].append(prompt)

# '?' help: typed after `set jsonapi-log ` inside (global)#, no Enter.
send(chan, "config system global")
chan.send("set jsonapi-log ?")
out = read_until_suffix(chan, "(global)# set jsonapi-log ")
result["help"] = out
# The typed text stays on the line; finish it with a value.
chan.send("all\n")
out, prompt = read_until_prompt(chan)
out, prompt = send(chan, "set bogus-field 1")
result["bad_field"] = out
out, prompt = send(chan, "set jsonapi-log sometimes")
result["bad_value"] = out
out, prompt = send(chan, "end")
result["after_end"] = prompt
out, prompt = send(chan, "diagnose test application sqllogd 204 tidb type=2, key=www.eicar.org")
result["tidb"] = out
out, prompt = send(chan, "get system status")
result["status"] = out
chan.send("exit\n")
time.sleep(0.2)
client.close()
print(json.dumps(result))
