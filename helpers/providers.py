"""Chat backends from configuration, and an ordered fallback chain with a circuit breaker per backend.

Taught in 19_deploy.ipynb (the `openai` client on an OpenAI-compatible `/v1`: 17_providers.ipynb; the breaker and the
retries: 14_resilience.ipynb). The served app (app/sse.py) streams every answer through `FallbackChain.open`.

    chain = FallbackChain(parse_backends("ollama=http://127.0.0.1:11434,openai=http://127.0.0.1:11435/v1#smollm2:135m",
                                         default_model="smollm2:135m"))
    backend, first, rest = await chain.open(messages, options={"num_predict": 64})   # pieces: ollama.ChatResponse

Both kinds stream `ollama.ChatResponse` pieces (the OpenAI stream is translated, its usage becoming
`prompt_eval_count`/`eval_count`), and both raise the errors helpers.resilience knows (ConnectionError,
httpx timeouts, ollama.ResponseError), so one retry policy and one breaker rule fit every backend.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import ollama
import openai

from helpers.resilience import CONNECT_S, CircuitBreaker, CircuitOpenError, make_client, open_stream_async

KINDS = ("ollama", "openai")
BACKENDS_HELP = (
    "Set CHAT_BACKENDS to a comma-separated list of KIND=URL[#MODEL], tried in order, KIND being ollama or openai, "
    "e.g. CHAT_BACKENDS=ollama=http://127.0.0.1:11434,openai=http://127.0.0.1:11435/v1#smollm2:135m"
)


class BackendsError(ValueError):
    """CHAT_BACKENDS cannot be read; the message says what to set."""


@dataclass(frozen=True)
class BackendSpec:
    """One configured backend: its kind (ollama or openai), base URL and chat model (None: the app's chat model)."""

    kind: str
    url: str
    model: str | None = None

    @property
    def name(self) -> str:
        """kind@host:port, the label of this backend in events, logs and metrics."""
        return f"{self.kind}@{httpx.URL(self.url).netloc.decode()}"


def parse_backends(text: str) -> list[BackendSpec]:
    """KIND=URL[#MODEL],... as BackendSpecs in order; BackendsError says what is wrong and what to set."""
    specs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        kind, sep, rest = item.partition("=")
        url, _, model = rest.partition("#")
        kind, url = kind.strip().lower(), url.strip().rstrip("/")
        if not sep or kind not in KINDS:
            raise BackendsError(f"CHAT_BACKENDS entry {item!r}: the kind must be ollama or openai. {BACKENDS_HELP}")
        if not url.startswith(("http://", "https://")):
            raise BackendsError(f"CHAT_BACKENDS entry {item!r}: {url!r} is not an http(s) URL. {BACKENDS_HELP}")
        specs.append(BackendSpec(kind, url, model.strip() or None))
    if not specs:
        raise BackendsError(f"CHAT_BACKENDS={text!r} names no backend. {BACKENDS_HELP}")
    return specs


def openai_options(options: dict) -> dict:
    """Ollama's generation options as the OpenAI API's arguments (num_predict -> max_tokens; the others by name)."""
    names = {
        "num_predict": "max_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
        "seed": "seed",
        "stop": "stop",
    }
    return {names[k]: v for k, v in options.items() if k in names and v is not None}


def ollama_error(exc: Exception) -> Exception:
    """An openai error as the one helpers.resilience classifies: timeout, no connection, or an HTTP status."""
    if isinstance(exc, openai.APITimeoutError):
        return httpx.ReadTimeout(f"openai: {exc}")
    if isinstance(exc, openai.APIConnectionError):
        return ConnectionError(f"openai: {exc}")
    if isinstance(exc, openai.APIStatusError):
        return ollama.ResponseError(f"openai: {exc.message}", exc.status_code)
    if type(exc).__module__.startswith("httpx"):  # the openai client's own HTTP layer, broken mid-stream
        return ConnectionError(f"openai: {type(exc).__name__}: {exc}")
    return ollama.ResponseError(f"openai: {exc}", -1)  # an error inside the stream: not retried


@dataclass
class Backend:
    """A chat backend (Ollama's API or an OpenAI-compatible one) behind its own circuit breaker."""

    spec: BackendSpec
    model: str
    breaker: CircuitBreaker
    read_s: float = 300.0
    client: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.spec.kind == "ollama":
            self.client = make_client(self.spec.url, read=self.read_s, asynchronous=True)
        else:  # max_retries=0: the app's own policy retries, once per attempt, before the first piece only
            key = "workshop"  # a local server ignores the key; the client insists on one (lesson 17)
            self.client = openai.AsyncOpenAI(
                base_url=self.spec.url,
                api_key=key,
                timeout=openai.Timeout(self.read_s, connect=CONNECT_S),
                max_retries=0,
            )

    @property
    def name(self) -> str:
        """The backend's label: kind@host:port."""
        return self.spec.name

    async def stream(self, messages: list[dict], *, options: dict) -> AsyncIterator[ollama.ChatResponse]:
        """Ask for a streamed answer; the pieces as ollama.ChatResponse, whichever the API."""
        if self.spec.kind == "ollama":
            return await self.client.chat(model=self.model, messages=messages, stream=True, options=options)
        try:
            chunks = await self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                **openai_options(options),
            )
        except openai.OpenAIError as exc:
            raise ollama_error(exc) from exc
        return self._translated(chunks)

    async def _translated(self, chunks: Any) -> AsyncIterator[ollama.ChatResponse]:
        """OpenAI chunks as Ollama pieces: each delta's text, then one done piece with the token counts."""
        start, usage = time.perf_counter_ns(), None
        try:
            async for chunk in chunks:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        yield self._piece(choice.delta.content, done=False)
        except (openai.OpenAIError, OSError) as exc:
            raise ollama_error(exc) from exc
        except Exception as exc:
            if not type(exc).__module__.startswith("httpx"):
                raise
            raise ollama_error(exc) from exc
        finally:
            await chunks.close()
        final = self._piece("", done=True)
        final.prompt_eval_count = usage.prompt_tokens if usage else None
        final.eval_count = usage.completion_tokens if usage else None
        final.eval_duration = time.perf_counter_ns() - start  # the whole stream: OpenAI reports no durations
        yield final

    def _piece(self, text: str, *, done: bool) -> ollama.ChatResponse:
        """One Ollama-shaped piece of this backend's answer."""
        return ollama.ChatResponse(model=self.model, message=ollama.Message(role="assistant", content=text), done=done)


class FallbackChain:
    """Backends tried in order: one whose breaker is open is skipped, one that fails before its first piece too."""

    def __init__(self, backends: list[Backend]) -> None:
        if not backends:
            raise BackendsError(f"a fallback chain needs at least one backend. {BACKENDS_HELP}")
        self.backends = backends

    async def open(
        self,
        messages: list[dict],
        *,
        options: dict,
        policy: Callable[[], Any] | None = None,
        on_fallback: Callable[[Backend, BaseException], None] | None = None,
    ) -> tuple[Backend, ollama.ChatResponse, AsyncIterator[ollama.ChatResponse]]:
        """(the backend that answered, its first piece, the rest of its stream); the last failure if none answered.

        policy() makes a fresh retry policy per backend (retries before the first piece only); on_fallback(backend,
        why) hears each backend passed over for the next one. Only transient failures count for a breaker (CircuitBreaker.__exit__).
        """
        failures: list[BaseException] = []
        for backend in self.backends:
            try:
                backend.breaker.before()  # CircuitOpenError at once while this backend is known to be down
                try:
                    first, rest = await open_stream_async(
                        functools.partial(backend.stream, messages, options=options),
                        policy=policy() if policy else None,
                    )
                except Exception as exc:
                    backend.breaker.__exit__(type(exc), exc, None)
                    raise
                backend.breaker.success()
                return backend, first, rest
            except Exception as exc:  # noqa: BLE001 - the next backend is tried; the last failure is raised
                failures.append(exc)
                if on_fallback is not None and backend is not self.backends[-1]:
                    on_fallback(backend, exc)
        real = [f for f in failures if not isinstance(f, CircuitOpenError)]
        if real:
            raise real[-1]
        raise min(failures, key=lambda f: getattr(f, "retry_after_s", 0.0))  # every breaker open: the soonest probe

    def open_breakers(self) -> bool:
        """True when every backend's breaker is open (nothing could answer now)."""
        return all(b.breaker.state == "open" for b in self.backends)

    def retry_after(self) -> float:
        """Seconds until the first open breaker lets a probe through."""
        return min(b.breaker.retry_after() for b in self.backends)


def make_chain(
    specs: list[BackendSpec],
    *,
    default_model: str,
    read_s: float = 300.0,
    failures: int = 3,
    reset_after: float = 10.0,
    breakers: dict[str, CircuitBreaker] | None = None,
    on_change: Callable[[str], Callable[[str, str], None]] | None = None,
) -> FallbackChain:
    """A FallbackChain of specs, each with its own CircuitBreaker (breakers: ones to reuse, by backend name)."""
    backends = []
    for spec in specs:
        breaker = (breakers or {}).get(spec.name) or CircuitBreaker(
            spec.name, failures=failures, reset_after=reset_after, on_change=on_change(spec.name) if on_change else None
        )
        backends.append(Backend(spec, spec.model or default_model, breaker, read_s=read_s))
    return FallbackChain(backends)
