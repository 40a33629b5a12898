"""What the big providers' refusals of XOAUTH2 mean, and what to change. No I/O.

Exchange Online tells its causes apart only in the text after ``535 5.7.139``; Gmail
answers ``535 5.7.8`` whatever the cause. The texts matched here are the servers' own.
"""

from __future__ import annotations

from typing import Final

from mailconduit.errors import SMTPError

__all__ = ["xoauth2_hint"]

#: (words of Exchange's 5.7.139 text, what to change), first match wins.
_EXCHANGE_POLICY: Final = (
    (
        "disabled for the tenant",
        "SMTP AUTH is turned off for the whole tenant: an Exchange administrator turns it on "
        "(Set-TransportConfig -SmtpClientAuthenticationDisabled $false), or for this mailbox "
        "alone (Set-CASMailbox MAILBOX -SmtpClientAuthenticationDisabled $false)",
    ),
    (
        "did not meet the criteria",
        "SMTP AUTH is off for this mailbox, or security defaults / a conditional access policy "
        "block it: turn on Authenticated SMTP for the mailbox (admin center: the user's Mail "
        "settings, or Set-CASMailbox MAILBOX -SmtpClientAuthenticationDisabled $false)",
    ),
    (
        "credentials were incorrect",
        "the username must be the mailbox the token was issued for (the signed-in account, "
        "or for app-only a mailbox the app has permission on)",
    ),
)
_EXCHANGE_REFUSED: Final = (
    "the server refused a fresh token: the username must be the signed-in mailbox and the app "
    "needs the SMTP.Send permission; for app-only sign-in, register the app's service "
    "principal in Exchange (New-ServicePrincipal) and give it permission on the mailbox "
    "(Add-MailboxPermission ... -AccessRights FullAccess)"
)
_GMAIL: Final = (
    "Google refused the token: the scope must be https://mail.google.com/ and the username "
    "the account that signed in"
)


def xoauth2_hint(error: SMTPError) -> str:
    """What to change after the server refused XOAUTH2 with ``error`` (a 5xx at AUTH)."""
    text = error.reply.lower()
    if error.enhanced == "5.7.139":
        for words, hint in _EXCHANGE_POLICY:
            if words in text:
                return hint
        return "Exchange refuses SMTP AUTH for this mailbox by policy: ask its administrator"
    if error.enhanced == "5.7.8":
        return _GMAIL
    if error.enhanced == "5.7.3":
        return _EXCHANGE_REFUSED
    return "the server refused the token: check the username and the OAuth2 scope"
