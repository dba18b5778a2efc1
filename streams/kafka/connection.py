"""The one place that turns ``kafka:`` settings into a connection: TLS, SASL and the brokers.

Every Kafka client hookstream makes (producers, consumers, the admin client, the Faust apps)
takes its connection arguments from :func:`client_kwargs` (aiokafka) or
:func:`faust_credentials` (Faust), so a cluster that needs TLS and a login gets them on every
connection, and none is left plaintext by a forgotten call site.

aiokafka reports a refused login, an untrusted certificate or a plaintext client on a TLS port
as ``Unable to bootstrap from [...]`` (the cause goes to its log, once per host). When a client
fails to start, :func:`start_failure` connects once more to the first broker to find that cause
and returns it as one line: :class:`KafkaAccessDenied` (not retriable: start-up stops at once)
or :class:`BrokerUnavailable` (nothing answers: worth waiting for). The password is never part
of a message: only the user name and the variable or file it came from.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from typing import TYPE_CHECKING, Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from schemas.config import KafkaSettings
from schemas.config_kafka_security import SASL_PROTOCOLS, TLS_PROTOCOLS
from schemas.errors import BrokerUnavailable, ConfigError, KafkaAccessDenied

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 10.0


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of ``settings`` (None without TLS), built once per distinct setting."""
    if settings.security_protocol not in TLS_PROTOCOLS:
        return None
    return _ssl_context(
        settings.ssl_cafile,
        settings.ssl_certfile,
        settings.ssl_keyfile,
        settings.ssl_check_hostname,
    )


@functools.cache
def _ssl_context(
    cafile: str | None, certfile: str | None, keyfile: str | None, check_hostname: bool
) -> ssl.SSLContext:
    """Cached: every producer and consumer of a process shares one context (and the file
    reads happen once, at the first client, where a bad path fails start-up)."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"kafka.ssl_cafile: cannot use {cafile}: {_reason(exc)}"]) from None
    context.check_hostname = check_hostname
    if certfile is not None:
        try:
            context.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                [
                    f"kafka.ssl_certfile/ssl_keyfile: cannot use {certfile} with {keyfile}: "
                    f"{_reason(exc)}"
                ]
            ) from None
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def password(settings: KafkaSettings) -> str | None:
    """The SASL password, or ConfigError naming where it should have come from."""
    if settings.security_protocol not in SASL_PROTOCOLS:
        return None
    if settings.sasl_password is None:
        if settings.sasl_password_file is not None:
            where = f"kafka.sasl_password_file: {settings.sasl_password_file} is missing or empty"
        else:
            where = (
                f"kafka.sasl_password_env: environment variable {settings.sasl_password_env} "
                "is not set"
            )
        raise ConfigError([f"{where} (the SASL password for user {settings.sasl_username})"])
    return settings.sasl_password.get_secret_value()


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """``bootstrap_servers`` and the security arguments of AIOKafkaProducer, AIOKafkaConsumer
    and AIOKafkaAdminClient (they share these names)."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.security_protocol in SASL_PROTOCOLS:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = password(settings)
    return kwargs


def faust_credentials(settings: KafkaSettings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for ``settings`` (None: plaintext).

    Faust 0.15 hands these to aiokafka as the same arguments as :func:`client_kwargs`
    (``credentials_to_aiokafka_auth``) for its consumer, producer and topic creation.
    """
    from faust.auth import SASLCredentials, SSLCredentials  # Faust only where Faust runs

    if settings.security_protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if settings.security_protocol == "SSL" and context is not None:
        return SSLCredentials(context)
    credentials = SASLCredentials(
        username=settings.sasl_username,
        password=password(settings),
        ssl_context=context,
        mechanism=settings.sasl_mechanism,
    )
    return credentials


def describe(settings: KafkaSettings) -> str:
    """How we connect, in words for a message (never the password)."""
    text = f"{settings.bootstrap_servers} ({settings.security_protocol}"
    if settings.security_protocol in SASL_PROTOCOLS:
        text += f", {settings.sasl_mechanism} as user {settings.sasl_username}"
    return text + ")"


async def start_failure(settings: KafkaSettings, exc: BaseException) -> BrokerUnavailable:
    """The one-line error for a client of ``settings`` that failed to start with ``exc``.

    Connects once to the first bootstrap broker to learn why (aiokafka only logs the cause):
    a refused login, an untrusted certificate or a protocol mismatch is
    :class:`KafkaAccessDenied`; anything else stays :class:`BrokerUnavailable`.
    """
    cause = await _probe(settings)
    if isinstance(cause, KafkaAccessDenied):
        return cause
    return BrokerUnavailable(f"cannot reach Kafka at {describe(settings)}: {cause or exc}")


async def _probe(settings: KafkaSettings) -> BrokerUnavailable | str | None:
    first = settings.bootstrap_servers.split(",")[0].strip()
    host, _, port_text = first.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        return f"kafka.bootstrap_servers: {first!r} is not host:port"
    kwargs = client_kwargs(settings)
    kwargs.pop("bootstrap_servers")
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            conn = await create_conn(
                host, port, request_timeout_ms=int(PROBE_TIMEOUT_S * 1000), **kwargs
            )
    except SaslAuthenticationFailed:
        return KafkaAccessDenied(
            f"SASL authentication failed for user {settings.sasl_username} at {first} "
            f"({settings.sasl_mechanism}): wrong password, or no such user — check "
            f"kafka.sasl_username and {_password_origin(settings)}"
        )
    except UnsupportedSaslMechanismError as err:
        return KafkaAccessDenied(
            f"kafka.sasl_mechanism: the broker at {first} does not accept "
            f"{settings.sasl_mechanism}: {err}"
        )
    except ssl.SSLCertVerificationError as err:
        return KafkaAccessDenied(
            f"TLS: the certificate of the broker at {first} is not trusted "
            f"({err.verify_message}); check kafka.ssl_cafile"
            + ("" if settings.ssl_cafile is None else f" ({settings.ssl_cafile})")
            + (" and kafka.ssl_check_hostname" if "hostname" in str(err.verify_message) else "")
        )
    except ssl.SSLError as err:
        return KafkaAccessDenied(
            f"TLS handshake with the broker at {first} failed ({_reason(err)}): is it a TLS "
            f"listener? kafka.security_protocol is {settings.security_protocol}"
        )
    except (KafkaConnectionError, ConnectionResetError) as err:
        return _closed(settings, first, during_handshake=isinstance(err, ConnectionResetError))
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT_S:g} s"
    except (OSError, KafkaError) as err:
        return _reason(err)
    conn.close()
    return None


def _closed(settings: KafkaSettings, first: str, *, during_handshake: bool) -> KafkaAccessDenied:
    """The broker accepted the TCP connection, then closed it without a Kafka answer: the
    client and the listener disagree on TLS, or a TLS listener wants a client certificate."""
    protocol = settings.security_protocol
    if protocol not in TLS_PROTOCOLS:
        return KafkaAccessDenied(
            f"the broker at {first} closed the connection without answering: it is probably "
            f"a TLS listener, and kafka.security_protocol is {protocol} (use SSL or SASL_SSL)"
        )
    if during_handshake:
        return KafkaAccessDenied(
            f"the broker at {first} broke off the TLS handshake: it is probably a plaintext "
            f"listener, and kafka.security_protocol is {protocol} (use PLAINTEXT or "
            "SASL_PLAINTEXT)"
        )
    if settings.ssl_certfile is None:
        return KafkaAccessDenied(
            f"the broker at {first} closed the TLS connection without answering: it probably "
            "requires a client certificate (mutual TLS): set kafka.ssl_certfile and ssl_keyfile"
        )
    return KafkaAccessDenied(
        f"the broker at {first} closed the TLS connection without answering: it probably "
        f"does not accept the client certificate {settings.ssl_certfile} (kafka.ssl_certfile)"
    )


def _password_origin(settings: KafkaSettings) -> str:
    if settings.sasl_password_file is not None:
        return f"the password in kafka.sasl_password_file ({settings.sasl_password_file})"
    return f"the password in ${settings.sasl_password_env} (kafka.sasl_password_env)"
