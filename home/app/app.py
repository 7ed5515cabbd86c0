"""HomeApp: the Textual chat. Owns the bindings, the session, and the one Engine.

The model loads in a thread worker while the chat screen is already up (typing works at once; the
status bar says "loading model…"). If the vault, config or model cannot be used, an error screen
shows the one-line message and what to do, instead of a traceback.
"""

from __future__ import annotations

from textual import work
from textual.app import App, ScreenStackError
from textual.binding import Binding

from home.app.commands import HomeCommands
from home.app.features import FeaturesMixin
from home.app.retrain import (
    RetrainRun,
    build_job,
    cpu_refusal_for,
    logs_refusal,
    picks_refusal,
    picks_waiting,
)
from home.app.screens.adapters import AdaptersScreen
from home.app.screens.chat import ChatScreen
from home.app.screens.confirm import ConfirmScreen
from home.app.screens.error import ErrorScreen
from home.app.session import AppOptions, ChatSession
from home.app.tools import ToolsMixin
from home.app.widgets.keys_panel import HomeHelpPanel
from home.app.widgets.train_panel import TrainPanel
from llm.errors import LLMError
from trainer.protocol.guard import cuda_visible
from trainer.protocol.job import Job, JobError
from vault.errors import VaultError
from vault.personas import hotkeys

BINDING_IDS = {"quit", "new_chat", "cancel", "retrain", "pick_best", "search", "copy", "memory"}  # config.toml [keys] entries that remap our bindings


class HomeApp(ToolsMixin, FeaturesMixin, App[None]):
    CSS_PATH = "home.tcss"
    TITLE = "Home"
    COMMANDS = App.COMMANDS | {HomeCommands}
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
        Binding("f1", "persona('')", "Base", show=False, priority=True),
        Binding("ctrl+t", "retrain", "Retrain", id="retrain", show=False, priority=True),
        Binding("ctrl+b", "pick_best", "Pick best", id="pick_best", show=False),
        Binding("ctrl+f", "search", "Search", id="search", show=False),
        Binding("f9", "cycle_mode", "Mode", id="mode", show=False, priority=True),  # auto → focused → character
        Binding("f12", "toggle_keys", "Keys", id="keys"),  # every key, the hidden ones too (Textual's panel)
    ]

    def __init__(self, options: AppOptions | None = None, **kwargs: object) -> None:
        """`HomeApp(AppOptions(vault=…, model=…))`, or keyword options: `HomeApp(vault=…, n_ctx=1024)`."""
        super().__init__()
        self.options = options or AppOptions(**kwargs)  # type: ignore[arg-type]
        self.session: ChatSession | None = None
        """None until the vault opened; its `engine` is None until the loader finished."""
        self.startup_error: Exception | None = None
        """Why the error screen is up (tests and `home` read it)."""
        self.watcher = None
        """Watches the manifest once the model is up, so adapters the trainer registers load at once."""
        self.managed_adapters: set[str] = set()
        self.retrain: RetrainRun | None = None
        """The trainer worker started by "Retrain my voice" (the last one; finished ones stay for tests)."""
        self._new_voice: str | None = None  # registered voice adapter not yet announced as loaded
        self.gestalts = None
        """Background distillation and gestalt re-indexing (home/app/gestalt_jobs.py), once the model is up."""

    @property
    def chat(self) -> ChatScreen | None:
        """The chat screen when it is the one shown; None under another screen, and while the app closes
        (its screens are gone before the workers that call back into it have stopped)."""
        try:
            screen = self.screen
        except ScreenStackError:
            return None
        return screen if isinstance(screen, ChatScreen) else None

    def on_mount(self) -> None:
        try:
            self.session = ChatSession(self.options)
        except (LLMError, VaultError) as exc:
            self.show_error(exc)
            return
        keys = self.session.config.keys
        keymap = {k: v for k, v in keys.items() if k in BINDING_IDS}
        if "cancel" in keymap:  # one key stops what runs: the reply, else the training
            keymap["cancel_training"] = keymap["cancel"]
        self.set_keymap(keymap)
        names = {p.id: p.name for p in self.session.personas}
        for hotkey, pid in hotkeys(self.session.personas).items():  # one persona per key, as the bar shows
            # priority: a focused TextArea binds f6/f7 itself (select line / all)
            self._bindings.bind(hotkey, f"persona({pid!r})", names[pid], show=False, priority=True)
        self.push_screen(ChatScreen(self.session))
        self._load_model()

    def show_error(self, exc: Exception) -> None:
        self.startup_error = exc
        self.push_screen(ErrorScreen(exc))

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load_model(self) -> None:
        try:
            self.session.load()
        except (LLMError, VaultError) as exc:
            self.call_from_thread(self.show_error, exc)
            return
        self.call_from_thread(self._model_ready)
        from home.app.gestalt_jobs import GestaltJobs
        from vault.watcher import VaultWatcher

        self.sync_adapters(announce=False)
        self.gestalts = GestaltJobs(self.session, notify=self._notify_gestalts)
        self.session.on_session_end = self.gestalts.session_ended
        self.watcher = VaultWatcher(self.session.vault, on_manifest=self.sync_adapters,
                                    on_gestalts=self.gestalts.files_changed).start()
        self.session.open_memory(
            on_indexed=lambda _count: self.from_thread(self._refresh_status),
            on_error=lambda line: self.from_thread(self.notify, line, title="Memory", severity="error", timeout=8),
            on_opened=lambda: self.from_thread(self.notify, "memory is on (the other Home process let it go)",
                                               title="Memory", timeout=6))
        self.gestalts.files_changed()  # edits made while the app was closed
        self.gestalts.start_backlog()
        for note, title in ((self.session.memory_note, "Memory"), (self.session.router_note, "Router")):
            if note:
                self.from_thread(self.notify, note, title=title, severity="warning", timeout=8)
        self.from_thread(self._refresh_status)

    def _notify_gestalts(self, message: str) -> None:
        self.from_thread(self.notify, message, title="Gestalts", timeout=6)

    def after_turn(self) -> None:
        """(The chat screen, after each reply.) Distil every N turns, in the background."""
        if self.gestalts is not None:
            self.gestalts.after_turn()

    def _refresh_status(self) -> None:
        if self.chat is not None:
            self.chat.refresh_status()

    def sync_adapters(self, announce: bool = True) -> None:
        """(A worker or the watcher's thread.) Load new adapters, unload removed ones, and if the active
        stack lost one, fall back to what the persona can still have; say what changed."""
        try:
            report, dropped = self.session.follow_manifest(self.managed_adapters)
            if dropped:
                self._notify_from_thread("Your manual adapter stack lost an adapter: back to automatic.")
        except (LLMError, VaultError) as exc:
            self._notify_from_thread(str(exc), severity="error")
            return
        if announce and (report.changed or report.skipped):
            self._notify_from_thread(report.summary())
        if self._new_voice is not None:
            self.from_thread(self._announce_voice)

    def from_thread(self, callback, *args, **kwargs) -> None:  # noqa: ANN001
        """`call_from_thread` for worker threads that may outlive the app: once it has closed there is
        nobody left to tell, so the call is dropped instead of raising. The loop is checked first:
        Textual builds its wrapper coroutine before it finds the loop closed, and that unawaited
        coroutine would be reported as a warning."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            self.call_from_thread(callback, *args, **kwargs)
        except RuntimeError:
            pass

    def _notify_from_thread(self, message: str, severity: str = "information") -> None:
        self.from_thread(self.notify, message, title="Adapters", severity=severity, timeout=8)

    def _model_ready(self) -> None:
        if self.chat is not None:
            self.chat.model_ready()

    # --- actions (keys and the command palette) -------------------------------------------------

    async def action_persona(self, pid: str) -> None:
        if self.chat is not None:
            await self.chat.switch_persona(pid or None)

    async def action_new_chat(self) -> None:
        if self.chat is not None:
            await self.chat.new_chat()

    async def action_resume(self, session_id: str) -> None:
        if self.chat is not None:
            try:
                await self.chat.new_chat(session_id)
            except VaultError as exc:
                self.notify(str(exc), severity="error", timeout=8)

    def action_export(self) -> None:
        if self.session is None or not self.session.ready:
            return
        try:
            path = self.session.export_markdown()
        except (OSError, VaultError) as exc:
            self.notify(f"export failed: {exc}", severity="error", timeout=8)
            return
        self.notify(f"Exported to {path}", title="Export", timeout=8)

    def action_adapters(self) -> None:
        if self.session is None:
            return
        try:
            manifest = self.session.manifest()
        except VaultError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        self.push_screen(AdaptersScreen(manifest, self.session.stack))

    # --- retrain my voice ----------------------------------------------------------------------

    @property
    def training_running(self) -> bool:
        """From start until the reader has passed on the worker's last event and its exit code."""
        return self.retrain is not None and self.retrain.code is None

    @property
    def training_cancellable(self) -> bool:
        """A run trains and has not been asked to stop yet (one SIGINT only: a second would abort it)."""
        return self.training_running and not self.retrain.interrupted

    def action_retrain(self) -> None:
        """Start the trainer worker on the user's chat logs, once the user says yes (ctrl+t is one key from
        ctrl+r and ctrl+y, and a run takes the cores for minutes); the panel follows its events."""
        self._start_training("sft", confirm=True)

    def action_learn_from_picks(self) -> None:
        """"Learn from your picks": DPO from the user's pick-best pairs over their voice (the panel offers it
        after [training] learn_from_picks_after new pairs; the palette always has it)."""
        self._start_training("dpo")

    def offer_picks(self) -> None:
        """After a pick: enough new pairs and nothing training → the retrain panel offers to learn from them."""
        need = self.session.config.training.learn_from_picks_after if self.session is not None else 0
        if need <= 0 or self.chat is None or self.training_running:
            return
        try:
            waiting = picks_waiting(self.session)
        except (VaultError, OSError):
            return
        if waiting >= need:
            self.chat.query_one(TrainPanel).offer(waiting)

    def _start_training(self, method: str, confirm: bool = False) -> None:
        if self.session is None or self.chat is None:
            return
        if self.training_running:
            self.notify("A training run is already going (cancel it from its panel).", title="Retrain")
            return
        panel = self.chat.query_one(TrainPanel)
        try:
            job = build_job(self.session, method)
            refusal = (picks_refusal(self.session) if method == "dpo" else logs_refusal(self.session, job)) \
                or cpu_refusal_for(job, self.session.engine)
        except (JobError, LLMError, VaultError, OSError, ValueError) as exc:  # ValueError: the logs' SourceError
            self.notify(f"retrain: {exc}", severity="error", timeout=8)
            return
        if refusal is not None:  # the worker would refuse too, after loading: say it now, start nothing
            panel.refuse(refusal)
            return
        if confirm:  # a refusal is said at once; a run that can start asks first
            gpu = job.device == "cuda" or (job.device == "auto" and cuda_visible())
            where = "on the GPU" if gpu else "on this machine's cores"
            self.push_screen(ConfirmScreen(
                "Retrain your voice from your chat logs?",
                f"A trainer runs beside the chat {where}, for minutes; its panel shows the progress and Esc "
                "there stops it. Your voice changes only once the new adapter is verified.",
                yes="Train", no="Not now", no_means="not now", danger=False),
                callback=lambda yes: self._launch_training(job, panel) if yes else None)
            return
        self._launch_training(job, panel)

    def _launch_training(self, job: Job, panel: TrainPanel) -> None:
        if self.training_running:  # another started while the question was open
            return
        try:
            self.retrain = RetrainRun(job, self.session.vault.runs_dir)
        except (JobError, LLMError, VaultError, OSError, ValueError) as exc:
            self.notify(f"retrain: {exc}", severity="error", timeout=8)
            return
        panel.start()
        self._keys_changed()
        self._read_training(self.retrain, panel)

    def action_toggle_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def action_show_help_panel(self) -> None:
        """F12 and the palette's "Keys": Textual's panel with Home's keys first (home/app/widgets/keys_panel.py)."""
        if not self.screen.query("HelpPanel"):
            self.screen.mount(HomeHelpPanel())

    def action_cancel_training(self) -> None:
        if self.retrain is not None and self.retrain.cancel():
            if self.chat is not None:
                self.chat.query_one(TrainPanel).stopping()
            self._keys_changed()

    @work(thread=True, group="retrain", exit_on_error=False)
    def _read_training(self, run: RetrainRun, panel: TrainPanel) -> None:
        """Blocks on the worker's stdout (a thread, so the chat stays live); hands events to the UI. If
        the app closes under us (close_engine stops the worker) or the panel fails, `follow` still reads
        the pipe to its end and reaps the worker."""
        code, why = run.follow(lambda event: self.call_from_thread(self._training_event, panel, event))
        self.from_thread(panel.ended, code, why)
        self.from_thread(self._keys_changed)

    def _keys_changed(self) -> None:
        """What Esc does (stop a reply, cancel training, nothing) changed: the footer asks again."""
        if self.chat is not None:
            self.chat.refresh_bindings()

    async def _training_event(self, panel: TrainPanel, event: dict) -> None:
        panel.show_event(event)
        if event.get("event") == "registered" and self.session is not None:
            try:
                user = self.session.manifest().users.get(self.session.user) or {}
            except VaultError:
                return
            if user.get("voice_adapter") == event.get("id"):
                self._new_voice = event["id"]
                await self._announce_voice()  # the watcher may have loaded it already; else it calls back

    async def _announce_voice(self) -> None:
        """Once the new voice adapter is on the engine, say so in the chat (and use it if voice is on)."""
        voice, session = self._new_voice, self.session
        if voice is None or session is None or session.engine is None or self.chat is None:
            return
        if voice not in session.engine.loaded_adapters:
            return
        self._new_voice = None
        await self.chat.note(f"your new voice adapter {voice} is loaded: ctrl+v to use it")
        if session.voice_on:
            session.refresh_stack()
            self.chat._stack_changed()

    async def action_quit(self) -> None:
        """Stop a running reply first so it is logged (partial) and its worker ends before we do; a
        training run is asked to stop with a checkpoint (`home train --resume` continues it)."""
        if self.chat is not None:
            self.chat.action_cancel()
        self.stop_generation()
        if self.training_running:
            self.notify("Stopping the training run at its next step (a checkpoint is kept)…", title="Retrain")
        self.action_cancel_training()
        await self.workers.wait_for_complete()
        self.exit()

    def close_engine(self) -> None:
        """Stop watching, then free the model (after `run()` returns; workers are done by then)."""
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        if self.retrain is not None:
            self.retrain.close()
        if self.gestalts is not None:
            self.gestalts.stop()
        if self.session is not None:
            self.session.close_memory()
        if self.session is not None and self.session.engine is not None:
            self.session.engine.close()


def run_app(options: AppOptions) -> int:
    app = HomeApp(options)
    try:
        app.run()
    finally:
        app.close_engine()
    if app.startup_error is not None:
        return getattr(app.startup_error, "exit_code", 3 if isinstance(app.startup_error, LLMError) else 1)
    return 0


__all__ = ["AppOptions", "HomeApp", "run_app"]
