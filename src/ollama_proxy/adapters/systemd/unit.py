"""The user unit's text: pure, from the command line it starts."""

from __future__ import annotations

import re
from collections.abc import Sequence

UNIT_NAME = "ie.fio.ollamaproxy.service"
# Characters that end or change a word on a systemd command line: such a word is quoted.
_NEEDS_QUOTES = re.compile(r"[\s\"'\\;]")

_TEMPLATE = """\
# Written by `ollama-proxy install-service`; run it again to rewrite it.
[Unit]
Description=ollama-proxy: context sizing and routing in front of Ollama

[Service]
Type=notify
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s
# Exit status 2 is a configuration error: starting again would fail the same way.
RestartPreventExitStatus=2
# Hardening that needs no user namespace: in a user manager ProtectSystem=, PrivateTmp= and the like
# need one, and some systems forbid them to unprivileged users.
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# AF_NETLINK: glibc's getaddrinfo asks the kernel which address families are configured.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
UMask=0077

[Install]
WantedBy=default.target
"""


def render_unit(command: Sequence[str]) -> str:
    """The unit that runs `command` (an absolute executable and its arguments) as a notify service."""
    return _TEMPLATE.format(exec_start=exec_line(command))


def exec_line(command: Sequence[str]) -> str:
    """`command` as an Exec*= line that systemd reads back word for word: `%` would start a specifier and
    is doubled; whitespace, quotes and backslashes need a quoted word, in which a newline is an escape.
    `$` would start a variable in an argument and is doubled there, but not in the executable's path,
    which systemd does not expand."""
    executable, *arguments = command
    return " ".join([_word(executable), *(_word(argument.replace("$", "$$")) for argument in arguments)])


def _word(word: str) -> str:
    word = word.replace("%", "%%")
    if not word or _NEEDS_QUOTES.search(word):
        word = '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return word
