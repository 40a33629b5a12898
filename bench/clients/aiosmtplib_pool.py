"""Contender (d): aiosmtplib, K concurrent connections, each reused.

K worker coroutines share one lazy CSV iterator; each owns one SMTP
connection and sends its next row until the iterator is exhausted.
With --raw (extra contender) messages are rendered from one precompiled
string template and sent with sendmail(), skipping email.message.
"""
import time

T0 = time.perf_counter()
import asyncio  # noqa: E402

import aiosmtplib  # noqa: E402
import common  # noqa: E402


def extra(ap):
    ap.add_argument("-k", "--concurrency", type=int, default=4)


async def worker(rows, a, tmpl, deadline, counter):
    smtp = aiosmtplib.SMTP(hostname=a.host, port=a.port, start_tls=False,
                           use_tls=False, timeout=30)
    await smtp.connect()
    try:
        for row in rows:  # shared iterator: each row is taken exactly once
            if a.raw:
                await smtp.sendmail(a.sender, [row["email"]],
                                    common.render_raw(row, tmpl, a.sender))
            else:
                msg = common.build_message(row, tmpl[0], tmpl[1], a.sender)
                await smtp.send_message(msg)
            counter[0] += 1
            if time.perf_counter() > deadline:
                break
    finally:
        await smtp.quit()


async def amain(a):
    if a.raw:
        tmpl = common.load_raw(a.template, a.subject)
    else:
        tmpl = (common.load_template(a.template),
                common.compile_template(a.subject))
    rows = common.iter_rows(a.csv)
    counter = [0]
    t_loop = time.perf_counter()
    deadline = t_loop + a.max_seconds
    await asyncio.gather(*(worker(rows, a, tmpl, deadline, counter)
                           for _ in range(a.concurrency)))
    common.report("aiosmtplib_pool", counter[0], t_loop, T0,
                  concurrency=a.concurrency, raw=a.raw)


def main():
    a = common.parse_args(extra)
    asyncio.run(amain(a))


if __name__ == "__main__":
    main()
