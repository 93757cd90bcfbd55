"""The supervisor: owns every actor in one task group and applies plans wave by wave."""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ztdp.errors import BackendUnavailable, PermanentError, TemporaryError, ZtdpError
from ztdp.events import EventBus, make_event
from ztdp.planner import waits
from ztdp.providers import Observation, Provider, ProviderRegistry, Resource, Target
from ztdp.runtime.actor import (
    ActorState,
    Apply,
    Delete,
    Message,
    Observe,
    Reconcile,
    Reply,
    Status,
    Step,
    StepCheck,
    StepTarget,
)
from ztdp.runtime.mailbox import Mailbox, MemoryMailbox
from ztdp.runtime.runs import Run, RunStep
from ztdp.settings import Settings
from ztdp.state import ObservedResource, StateStore

log = logging.getLogger("ztdp.runtime")

HEALTH_STATUS = {
    "Ready": Status.READY,
    "Progressing": Status.PROGRESSING,
    "Degraded": Status.DEGRADED,
}
MAX_BACKOFF = 30.0
# An actor with mail and the mailbox it drains until empty.
Activation = tuple[ActorState, Mailbox[Message]]


@dataclass(slots=True)
class _IdleWorker:
    wake: anyio.Event = field(default_factory=anyio.Event)
    activation: Activation | None = None


class _StepOrder:
    """The order a plan's steps may run in, and which of them are ready to start.

    A step waits for the steps it depends on; a deletion waits instead for the deletion of
    the steps that depend on it. Dependencies outside the plan are already in place.
    """

    def __init__(self, waves: list[Mapping[str, Any]]) -> None:
        self.steps = {s["node"]: s for w in waves for s in w["steps"]}
        self.waits = waits(waves)
        self._left = {n: set(w) for n, w in self.waits.items()}
        self._dependents: dict[str, list[str]] = {n: [] for n in self.steps}
        for node, before in self.waits.items():
            for b in before:
                self._dependents[b].append(node)
        self.ready = deque(n for n in self.steps if not self._left[n])

    def done(self, node: str) -> None:
        """`node` has finished, whatever its outcome: what waited only for it is ready."""
        for dependent in self._dependents[node]:
            left = self._left[dependent]
            left.discard(node)
            if not left:
                self.ready.append(dependent)


class _Answers:
    """Steps whose actors have answered, in order, for the run's executor to pick up."""

    __slots__ = ("_arrived", "_closed", "_nodes")

    def __init__(self) -> None:
        self._nodes: deque[str] = deque()
        self._arrived: anyio.Event | None = None
        self._closed = False

    def put(self, node: str) -> None:
        if self._closed:
            return  # an answer after the run gave up on it has nobody to go to
        self._nodes.append(node)
        if self._arrived is not None:
            self._arrived.set()

    async def next(self, seconds: float) -> str | None:
        """The next answer, or None if none comes within `seconds`."""
        if not self._nodes:
            self._arrived = anyio.Event()
            with anyio.move_on_after(seconds):
                await self._arrived.wait()
            self._arrived = None
        return self._nodes.popleft() if self._nodes else None

    def close(self) -> None:
        self._closed = True


class ShuttingDown(BackendUnavailable):
    """The runtime is stopping and takes no new work: retry against another process."""

    title = "Shutting down"


class Supervisor:
    def __init__(
        self,
        *,
        providers: ProviderRegistry,
        state: StateStore,
        events: EventBus,
        settings: Settings,
        mailbox: Callable[[int], Mailbox[Message]] = MemoryMailbox,
    ) -> None:
        self.providers = providers
        self.actors: dict[str, ActorState] = {}
        self._state = state
        self._events = events
        self._settings = settings
        self._new_mailbox = mailbox
        self._active: dict[str, Mailbox[Message]] = {}
        self._idle: deque[_IdleWorker] = deque()  # workers waiting for an activation
        self._busy = 0  # running plans and active actors
        self._quiet = anyio.Event()
        self._accepting = False
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None

    # --- life cycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        self._stack = AsyncExitStack()
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._accepting = True
        if self._settings.observe_interval > 0:
            self._tg.start_soon(self._observe_forever)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self, grace: float = 10.0) -> None:
        """Stop intake, let accepted messages and runs finish within `grace`, then cancel."""
        if self._stack is None:
            return  # already closed: calling twice is harmless
        self._accepting = False
        with anyio.move_on_after(grace):
            while self._busy:
                self._quiet = anyio.Event()
                await self._quiet.wait()
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        stack, self._stack = self._stack, None
        await stack.aclose()

    def _enter(self) -> None:
        self._busy += 1

    def _leave(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._quiet.set()

    # --- messages --------------------------------------------------------------------------

    def actor(self, node: str, provider: str | None = None) -> ActorState:
        state = self.actors.get(node)
        if state is None:
            state = self.actors[node] = ActorState(node=node, provider=provider)
        elif provider is not None:
            state.provider = provider
        return state

    async def tell(self, node: str, message: Message, *, provider: str | None = None) -> None:
        """Queue a message for a node's actor, activating it if it is idle."""
        if not self._accepting:
            raise ShuttingDown(
                f"the runtime is stopping; {type(message).__name__} for {node} refused"
            )
        await self._deliver(node, message, provider)

    async def _deliver(self, node: str, message: Message, provider: str | None) -> None:
        # Runs already accepted keep delivering while the supervisor drains.
        assert self._tg is not None, "the supervisor is not running"
        state = self.actor(node, provider)
        while True:
            mailbox = self._active.get(node)
            if mailbox is None:
                mailbox = self._active[node] = self._new_mailbox(self._settings.mailbox_size)
                self._enter()
                self._activate(state, mailbox)
            try:
                await mailbox.send(message)
                return
            except anyio.ClosedResourceError:
                # We waited on a full mailbox and the actor drained it and went idle before
                # our turn: the message is not in; activate the actor again and resend.
                continue

    def _activate(self, state: ActorState, mailbox: Mailbox[Message]) -> None:
        """Give an actor with mail to an idle worker, or to a new one if none is idle."""
        if self._idle:
            idle = self._idle.pop()  # the most recently idle: likeliest still in the caches
            idle.activation = (state, mailbox)
            idle.wake.set()
        else:
            assert self._tg is not None
            self._tg.start_soon(self._worker, state, mailbox, name="actor worker")

    async def _worker(self, state: ActorState, mailbox: Mailbox[Message]) -> None:
        """Run activations one after another, waiting idle in between while few others wait.

        Waking a waiting task costs a fraction of spawning one, which matters when a plan
        starts hundreds of steps at once; the idle pool is capped so that a burst does not
        leave a task behind for every actor it touched.
        """
        while True:
            await self._run_actor(state, mailbox)
            if len(self._idle) >= self._settings.idle_workers:
                return
            idle = _IdleWorker()
            self._idle.append(idle)
            try:
                await idle.wake.wait()
            finally:
                if idle.activation is None:  # cancelled while waiting: stopping
                    self._idle.remove(idle)
            assert idle.activation is not None  # woken only with an activation
            state, mailbox = idle.activation

    async def _run_actor(self, state: ActorState, mailbox: Mailbox[Message]) -> None:
        """One activation: handle the mailbox until it is empty, then let the actor go idle."""
        try:
            while True:
                try:
                    message = mailbox.receive_nowait()
                except anyio.WouldBlock:
                    # Idle: drop the task and the mailbox; the state stays. No await between
                    # the empty check and the removal, so no message can slip in between.
                    del self._active[state.node]
                    mailbox.close()
                    return
                try:
                    await self._handle(state, message)
                except Exception as exc:  # the actor itself broke, not its provider
                    await self._crashed(state, message, exc)
                    # Restart after a backoff; siblings are untouched.
                    await anyio.sleep(
                        min(self._settings.retry_backoff * 2 ** (state.restarts - 1), MAX_BACKOFF)
                    )
        finally:
            self._leave()

    async def _crashed(self, state: ActorState, message: Message, exc: Exception) -> None:
        """Fail the message that crashed the actor; nothing here may take the worker down."""
        state.restarts += 1
        log.exception("actor %s crashed", state.node)
        error = f"actor crashed: {exc!r}"
        try:
            await self._status(state, Status.FAILED, error=error)
        except Exception:
            state.status, state.last_error = Status.FAILED, error
            log.exception("actor %s: its crash could not be reported", state.node)
        if message.reply is not None:
            message.reply.finish(Status.FAILED, error)

    async def _handle(self, state: ActorState, message: Message) -> None:
        match message:
            case Apply(resource=resource, target=target, run=run):
                _desire(state, resource, target)
                await self._apply(state, run)
            case Delete(resource=resource, target=target, run=run):
                state.resource, state.target = resource, target
                await self._delete(state, run)
            case Step():
                await self._step(state, message)
            case Observe():
                await self._observe(state)
            case Reconcile():
                if state.resource is not None and state.status not in (
                    Status.DELETED,
                    Status.DELETING,
                ):
                    await self._apply(state, None)
        if message.reply is not None:
            message.reply.finish(state.status, state.last_error)

    async def _step(self, state: ActorState, message: Step) -> None:
        run, rs, step = message.run, message.record, message.step
        if rs.finished_at is not None:
            return  # the run gave up waiting for this step: too late to start it
        rs.status, rs.started_at = "Progressing", datetime.now(UTC)
        await self._step_event(run, rs)
        try:
            refusal = await message.check(run, step)
            if refusal is not None:
                raise PermanentError(refusal)
            resource, target = await message.target(step)
        except ZtdpError as exc:
            rs.status, rs.error = "Failed", exc.detail
        except Exception as exc:  # a bug in the caller's hooks fails the step, not the actor
            log.exception("step %s of run %s", rs.node, run.id)
            rs.status, rs.error = "Failed", f"internal error: {exc!r}"
        else:
            if step["action"] == "noop":
                if state.resource is not None:  # observe it where its environment says now
                    state.target = target
                rs.status = "Unchanged"
            elif step["action"] == "delete":
                state.resource, state.target = resource, target
                await self._delete(state, run.id)
                rs.status, rs.error = _step_status(state.status), state.last_error
            else:
                _desire(state, resource, target)
                await self._apply(state, run.id)
                rs.status, rs.error = _step_status(state.status), state.last_error
        rs.finished_at = datetime.now(UTC)
        await self._step_event(run, rs)

    # --- what actors do --------------------------------------------------------------------

    async def _status(
        self,
        state: ActorState,
        status: Status,
        *,
        error: str | None = None,
        message: str = "",
        run: str | None = None,
    ) -> None:
        changed = status is not state.status
        state.status, state.last_error, state.message = status, error, message
        state.updated_at = datetime.now(UTC)
        if changed or state.since is None:
            state.since = state.updated_at
        if changed or error:
            await self._events.publish(
                make_event(
                    "actor.status",
                    subject=state.node,
                    run=run,
                    data={
                        "status": status.value,
                        "error": error,
                        "message": message,
                        "generation": state.generation,
                    },
                )
            )

    def _provider(self, state: ActorState) -> Provider | None:
        return self.providers.get(state.provider or "")

    async def _call(
        self,
        state: ActorState,
        run: str | None,
        provider: Provider,
        call: Callable[[], Awaitable[Observation]],
        what: str,
    ) -> Observation | None:
        """One provider call with the step timeout and retries; a failure sets Failed."""
        try:
            with _deadline(self._settings.step_timeout):
                return await self._retrying(state, run, call)
            error = f"{what} timed out after {self._settings.step_timeout:g} s"
        except ZtdpError as exc:
            error = exc.detail
        except Exception as exc:  # a provider bug is that provider's failure, not ours
            error = f"provider {provider.kind} failed: {exc!r}"
        await self._status(state, Status.FAILED, run=run, error=error)
        return None

    async def _missing_provider(self, state: ActorState, run: str | None) -> None:
        await self._status(
            state, Status.FAILED, run=run, error=self.providers.missing(state.provider)
        )

    async def _provider_step(
        self,
        state: ActorState,
        run: str | None,
        starting: Status,
        what: str,
        action: Callable[[Provider, Resource, Target], Awaitable[Observation]],
    ) -> Observation | None:
        """Find the node's provider, report `starting`, then run `action` as one call."""
        provider = self._provider(state)
        if provider is None:
            await self._missing_provider(state, run)
            return None
        assert state.resource is not None and state.target is not None
        resource, target = state.resource, state.target
        await self._status(state, starting, run=run)
        return await self._call(
            state, run, provider, lambda: action(provider, resource, target), what
        )

    async def _apply(self, state: ActorState, run: str | None) -> None:
        observation = await self._provider_step(state, run, Status.PROGRESSING, "apply", _apply)
        if observation is not None:
            await self._observed(state, observation, run)

    async def _retrying(
        self, state: ActorState, run: str | None, call: Callable[[], Awaitable[Observation]]
    ) -> Observation:
        retries = self._settings.provider_retries
        for attempt in range(retries + 1):
            try:
                return await call()
            except TemporaryError as exc:
                if attempt == retries:
                    raise TemporaryError(
                        f"{exc.detail} (gave up after {retries} retries)",
                        retry_after=exc.retry_after,
                    ) from exc
                delay = max(exc.retry_after, self._settings.retry_backoff * 2**attempt)
                delay = min(delay, MAX_BACKOFF) * (0.8 + 0.4 * random.random())
                state.last_error = exc.detail
                await self._events.publish(
                    make_event(
                        "actor.retry",
                        subject=state.node,
                        run=run,
                        data={
                            "error": exc.detail,
                            "attempt": attempt + 1,
                            "delay": round(delay, 3),
                        },
                    )
                )
                await anyio.sleep(delay)
        raise AssertionError("unreachable")

    async def _observed(self, state: ActorState, observation: Observation, run: str | None) -> None:
        state.observed = dict(observation.state)
        state.observed_generation = state.generation
        assert state.resource is not None and state.target is not None
        await self._state.put(
            ObservedResource(
                node=state.node,
                source=state.node,
                kind=state.resource.kind,
                application=state.resource.application,
                environment=state.target.environment,
                provider=state.provider,
                state=dict(observation.state),
                depends_on=list(state.resource.depends_on),
            )
        )
        await self._status(
            state, HEALTH_STATUS[observation.health], message=observation.message, run=run
        )

    async def _delete(self, state: ActorState, run: str | None) -> None:
        if await self._provider_step(state, run, Status.DELETING, "delete", _delete) is None:
            return
        await self._state.delete(state.node)
        state.observed = None
        await self._status(state, Status.DELETED, run=run)

    async def _observe(self, state: ActorState) -> None:
        provider = self.providers.get(state.provider or "")
        if provider is None or state.resource is None or state.target is None:
            return
        if state.status in (Status.DELETED, Status.DELETING, Status.PENDING):
            return
        try:
            with anyio.fail_after(self._settings.step_timeout):
                seen = await provider.observe(resource=state.resource, target=state.target)
                changes = (
                    []
                    if seen is None
                    else await provider.diff(desired=state.resource.desired, observed=seen.state)
                )
        except (ZtdpError, TimeoutError, OSError) as exc:
            await self._events.publish(
                make_event("actor.observe_failed", subject=state.node, data={"error": str(exc)})
            )
            return
        if seen is None or changes:
            repair = (state.target.settings or {}).get("reconcile", "repair") == "repair"
            if repair or state.status is not Status.DRIFTED:
                await self._events.publish(
                    make_event(
                        "drift.detected",
                        subject=state.node,
                        data={"missing": seen is None, "changes": changes},
                    )
                )
            if repair:
                await self._apply(state, None)
                if state.status is Status.FAILED:  # the repair itself failed: say so, and why
                    event = make_event(
                        "drift.repair_failed", subject=state.node, data={"error": state.last_error}
                    )
                else:
                    event = make_event("drift.repaired", subject=state.node, data={})
                await self._events.publish(event)
            else:
                # Report-only: it is not what was asked for any more, so it is not Ready (a
                # promotion must not pass on it); said once, not at every observation.
                paths = [str(c["path"]) for c in changes]
                more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
                what = "missing" if seen is None else ", ".join(paths[:5]) + more
                await self._status(state, Status.DRIFTED, message=f"drifted: {what}")
            return
        await self._observed(state, seen, None)

    async def _observe_forever(self) -> None:
        interval = self._settings.observe_interval
        while True:
            await anyio.sleep(interval * (0.8 + 0.4 * random.random()))  # jitter
            for node, state in list(self.actors.items()):
                if state.resource is not None and self._accepting:
                    await self.tell(node, Observe())

    # --- plans -----------------------------------------------------------------------------

    def start(
        self, run: Run, plan_waves: list[Mapping[str, Any]], *, target: StepTarget, check: StepCheck
    ) -> None:
        """Execute a plan in the background; follow it through the run."""
        if not self._accepting or self._tg is None:
            raise ShuttingDown(f"the runtime is stopping; run {run.id} refused")
        self._enter()
        self._tg.start_soon(self._execute, run, plan_waves, target, check, name=f"run {run.id}")

    async def _execute(
        self, run: Run, waves: list[Mapping[str, Any]], target: StepTarget, check: StepCheck
    ) -> None:
        """Run a plan's steps in dependency order, at most `apply_parallelism` at once.

        A step starts as soon as everything it waits for has finished, which is never later
        than wave by wave: a slow step holds back its dependents only. A step waiting for one
        that failed is Blocked, naming it. Deletions wait for the deletion of their dependents.
        """
        try:
            await self._events.publish(
                make_event(
                    "run.started",
                    subject=run.environment,
                    run=run.id,
                    actor=run.actor,
                    data={
                        "trigger": run.trigger,
                        "application": run.application,
                        "steps": len(run.steps),
                    },
                )
            )
            order = _StepOrder(waves)
            run_steps = {rs.node: rs for rs in run.steps}
            parallelism = self._settings.apply_parallelism
            slots = anyio.Semaphore(parallelism) if parallelism else None
            answers = _Answers()
            failed: dict[str, str] = {}  # node -> why it failed or is blocked
            flying: dict[str, Reply] = {}

            def on_done(node: str) -> Callable[[], None]:
                def done() -> None:
                    if slots is not None:
                        slots.release()
                    answers.put(node)

                return done

            def settle(node: str) -> None:
                rs = run_steps[node]
                if rs.status in ("Failed", "Blocked"):
                    failed[node] = rs.error or rs.status.lower()
                order.done(node)

            ready = order.ready
            while ready or flying:
                while ready:
                    node = ready.popleft()
                    rs, step = run_steps[node], order.steps[node]
                    cause = next((d for d in order.waits[node] if d in failed), None)
                    if cause is not None:
                        rs.status, rs.error = "Blocked", f"blocked by {cause}: {failed[cause]}"
                        # The actor says why too: its deployment's status is read from it.
                        blocked = self.actor(node, step["provider"])
                        await self._status(blocked, Status.BLOCKED, error=rs.error, run=run.id)
                        await self._finish(run, rs)
                        settle(node)
                        continue
                    # The actor checks and carries out the step; this loop only dispatches,
                    # so that no step waits here behind another's policy check.
                    if slots is not None:
                        await slots.acquire()
                    flying[node] = reply = Reply(on_done=on_done(node))
                    await self._deliver(
                        node, Step(run, rs, step, check, target, reply), step["provider"]
                    )
                if not flying:
                    break
                done = await answers.next(self._settings.step_timeout * 2)
                if done is not None:
                    # Only flying steps answer: once the run gives up on its flying steps, all
                    # that is left of it is blocked, and it ends before a late answer comes.
                    reply = flying.pop(done)
                    rs = run_steps[done]
                    if rs.finished_at is None:  # the actor broke before recording the outcome
                        rs.status, rs.error = "Failed", reply.error or "the actor stopped"
                        await self._finish(run, rs)
                    settle(done)
                    continue
                for node in list(flying):  # the actors did not answer in time
                    flying.pop(node)
                    rs = run_steps[node]
                    rs.status, rs.error = "Failed", "no answer from the actor in time"
                    await self._finish(run, rs)
                    settle(node)
            answers.close()
            run.status = "Failed" if failed else "Succeeded"
            run.finished_at = datetime.now(UTC)
            await self._events.publish(
                make_event(
                    "run.finished",
                    subject=run.environment,
                    run=run.id,
                    actor=run.actor,
                    data={"status": run.status, "failed": sorted(failed)},
                )
            )
        except Exception as exc:  # a broken run must not take the supervisor down with it
            log.exception("run %s broke", run.id)
            run.status, run.finished_at = "Failed", datetime.now(UTC)
            for rs in run.steps:
                if rs.finished_at is None:
                    rs.status, rs.error = "Failed", f"the run broke: {exc!r}"
        finally:
            self._leave()

    async def _finish(self, run: Run, rs: RunStep) -> None:
        rs.finished_at = datetime.now(UTC)
        await self._step_event(run, rs)

    async def _step_event(self, run: Run, rs: Any) -> None:
        await self._events.publish(
            make_event(
                "run.step",
                subject=rs.node,
                run=run.id,
                actor=run.actor,
                data={"action": rs.action, "status": rs.status, "error": rs.error, "wave": rs.wave},
            )
        )


async def _apply(provider: Provider, resource: Resource, target: Target) -> Observation:
    await provider.validate(resource=resource)
    return await provider.apply(resource=resource, target=target)


async def _delete(provider: Provider, resource: Resource, target: Target) -> Observation:
    await provider.delete(resource=resource, target=target)
    return Observation(state={}, health="Ready")


def _desire(state: ActorState, resource: Resource, target: Target) -> None:
    state.resource, state.target = resource, target
    state.desired = dict(resource.desired)
    state.generation += 1


def _deadline(seconds: float) -> anyio.CancelScope:
    """A scope cancelled after `seconds`; code after its block runs only if that happened.

    `anyio.fail_after` without its generator wrapper: it is on the path of every step.
    """
    return anyio.CancelScope(deadline=anyio.current_time() + seconds)


def _step_status(status: Status | None) -> Any:
    if status is None or status in (Status.FAILED, Status.BLOCKED, Status.DELETING):
        return "Failed"
    return status.value


__all__ = ["ShuttingDown", "StepCheck", "StepTarget", "Supervisor"]
