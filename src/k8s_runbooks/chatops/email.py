"""Email updates over SMTP (stdlib smtplib): STARTTLS and login when configured, a timeout on every step."""

from __future__ import annotations

import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from k8s_runbooks.chatops.settings import ChatOpsSettings
from k8s_runbooks.errors import ConfigError, PermanentError, TransientError


def send_email(settings: ChatOpsSettings, to: list[str], subject: str, text: str, timeout: float = 10.0) -> bool:
    """Send a plain-text email; False when no SMTP host or no recipient is configured. Transient failures
    (connection, timeout, 4xx replies) raise TransientError, refusals (5xx, authentication) PermanentError."""
    if not settings.smtp_host or not to:
        return False
    msg = EmailMessage()
    msg["From"] = settings.email_from
    msg["To"] = ", ".join(to)
    msg["Subject"] = " ".join(subject.split())[:200] or "k8s-runbooks update"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="k8s-runbooks")
    msg.set_content(text)
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout) as smtp:
            smtp.ehlo()
            if settings.smtp_starttls:
                if not smtp.has_extn("starttls"):
                    raise ConfigError(f"SMTP server {settings.smtp_host}:{settings.smtp_port} does not offer STARTTLS",
                                      hint="set K8S_RUNBOOKS_SMTP_STARTTLS=false only for a trusted local relay")
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.smtp_username:
                password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                smtp.login(settings.smtp_username, password)
            refused = smtp.send_message(msg)
    except smtplib.SMTPAuthenticationError as exc:
        raise PermanentError(f"SMTP login refused ({exc.smtp_code})", hint="check K8S_RUNBOOKS_SMTP_USERNAME/PASSWORD") from None
    except smtplib.SMTPResponseException as exc:
        what = f"SMTP server answered {exc.smtp_code}"
        if 400 <= exc.smtp_code < 500:
            raise TransientError(what) from None
        raise PermanentError(what, hint="check the sender and recipient addresses") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise PermanentError(f"SMTP server refused every recipient ({', '.join(exc.recipients)})") from None
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, socket.timeout, OSError) as exc:
        raise TransientError(f"cannot deliver email via {settings.smtp_host}:{settings.smtp_port} ({type(exc).__name__})") from None
    if refused:
        raise PermanentError(f"SMTP server refused recipients: {', '.join(refused)}")
    return True
