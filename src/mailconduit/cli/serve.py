"""``mailconduit serve``: the web console and REST API (uvicorn), on 127.0.0.1 by default."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from mailconduit.config.connection import is_loopback_host

if TYPE_CHECKING:
    from starlette.applications import Starlette


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command("serve")(serve)


Host = Annotated[
    str,
    typer.Option(
        "--host", help="Address to listen on. Anything but loopback needs --allow-remote."
    ),
]
Port = Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port to listen on.")]
AllowRemote = Annotated[
    bool,
    typer.Option(
        "--allow-remote",
        help="Accept listening on a non-loopback address, so other machines can reach the "
        "console. Put it behind HTTPS (and use --secure-cookies).",
    ),
]
AllowedHost = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-host",
        metavar="NAME",
        help="Another host name browsers use to reach the console (repeatable). Requests "
        "naming a Host other than these, the localhost names and --host are refused.",
    ),
]
SecureCookies = Annotated[
    bool,
    typer.Option(
        "--secure-cookies", help="Mark cookies Secure (when served over HTTPS by a proxy)."
    ),
]
MaxUploadMb = Annotated[
    int,
    typer.Option(
        "--max-upload-mb", min=1, max=10_000, help="Largest data file an upload may be."
    ),
]
ForwardedAllowIps = Annotated[
    str,
    typer.Option(
        "--forwarded-allow-ips",
        metavar="ADDRESSES",
        help="Comma-separated addresses or networks of the reverse proxies in front of the "
        "console. Only requests coming from them may name the client (X-Forwarded-For) and "
        "the scheme (X-Forwarded-Proto); from anyone else those headers are ignored, so "
        "sign-in limits count the real peer. Default: none trusted.",
    ),
]
RunSink = Annotated[
    bool,
    typer.Option(
        "--sink/--no-sink",
        help="Keep the built-in SMTP server (the 'local' connection and the local inbox) "
        "running while the console runs.",
    ),
]
RunScheduler = Annotated[
    bool,
    typer.Option(
        "--scheduler/--no-scheduler",
        help="Take part in running the interfaces' schedules. Several consoles may share a "
        "store: one of them runs the schedules (it holds a lease in the store), the others "
        "stand by and take over if it stops. --no-scheduler keeps this one out.",
    ),
]


def serve(
    host: Host = "127.0.0.1",
    port: Port = 8080,
    allow_remote: AllowRemote = False,
    allowed_host: AllowedHost = None,
    secure_cookies: SecureCookies = False,
    max_upload_mb: MaxUploadMb = 20,
    forwarded_allow_ips: ForwardedAllowIps = "",
    run_sink: RunSink = True,
    scheduler: RunScheduler = True,
) -> None:
    """Run the web console and REST API (accounts come from 'mailconduit users create').

    Test Connection and exports connect only where the network policy allows, judged on
    the resolved address: MAILCONDUIT_DENY_NETWORKS (comma-separated CIDRs) always
    refuses; MAILCONDUIT_ALLOW_NETWORKS allows, and re-opens the built-in denials
    (169.254.0.0/16, fe80::/10, fd00:ec2::254, 100.100.100.200); when it is set,
    everything outside it is refused. An IPv4 address inside an IPv6 one (NAT64, 6to4,
    Teredo, IPv4-compatible) is judged as well.
    """
    from mailconduit.web.app import create_app

    _check_listen_address(host, allow_remote=allow_remote)
    proxies = _trusted_proxies(forwarded_allow_ips)
    hosts = _allowed_hosts(host, allowed_host or [])
    _warn_when_nobody_can_sign_in()
    app = create_app(
        allowed_hosts=hosts,
        max_upload_bytes=max_upload_mb * 1024 * 1024,
        secure_cookies=secure_cookies,
        run_sink=run_sink,
        forwarded_allow_ips=proxies,
    )
    _run(app, host=host, port=port, scheduler=scheduler)


def _check_listen_address(host: str, *, allow_remote: bool) -> None:
    """Refuse an address other machines can reach unless --allow-remote says so."""
    if not is_loopback_host(host) and not allow_remote:
        raise typer.BadParameter(
            f"{host} is reachable from other machines; add --allow-remote if that is intended",
            param_hint="--host",
        )


def _trusted_proxies(addresses: str) -> tuple[str, ...]:
    """The networks of --forwarded-allow-ips, each as text; bad input names the option."""
    from mailconduit.netpolicy import parse_networks

    try:
        return tuple(str(n) for n in parse_networks(addresses))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--forwarded-allow-ips") from None


def _allowed_hosts(host: str, named: list[str]) -> list[str]:
    """The Host headers the console answers: the localhost names, --host and --allowed-host;
    anything when it listens on every interface and no --allowed-host narrows it."""
    from mailconduit.web.security import LOCAL_HOSTS

    if host in ("0.0.0.0", "::") and not named:
        print(
            "mailconduit: listening on every interface with no --allowed-host: "
            "any Host header is accepted",
            file=sys.stderr,
        )
        return ["*"]
    return [*LOCAL_HOSTS, host.strip("[]"), *named]


def _warn_when_nobody_can_sign_in() -> None:
    from mailconduit.accounts import users

    if not users.list_users():
        print(
            "mailconduit: no console user yet; create one with: mailconduit users create NAME",
            file=sys.stderr,
        )


def _run(app: Starlette, *, host: str, port: int, scheduler: bool) -> None:
    """Serve ``app`` until Ctrl-C, with the interfaces' scheduler beside it when asked."""
    import uvicorn

    shown = f"[{host}]" if ":" in host else host
    print(
        f"mailconduit console on http://{shown}:{port}/ (Ctrl-C stops it)",
        file=sys.stderr,
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        if scheduler:
            from mailconduit.interfaces.schedule import InterfaceScheduler

            def announce(text: str) -> None:
                print(f"mailconduit: {text}", file=sys.stderr, flush=True)

            stack.enter_context(InterfaceScheduler.from_environment(announce=announce).running())
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            server_header=False,
            proxy_headers=False,  # the app believes forwarded headers from --forwarded-allow-ips only
            access_log=False,
        )
