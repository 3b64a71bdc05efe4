"""What the four set-up screens share: Enter to go on, Escape to leave a field, applying edits to the draft, and
redrawing when the draft changes (the nav bar and the footer come from TuneScreen)."""
from __future__ import annotations

from typing import Any, ClassVar

from textual.binding import Binding
from textual.events import DescendantBlur, DescendantFocus, ScreenResume
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Select, Static

from core.config import RunConfig, from_dict, to_dict
from core.errors import TuneError
from tui.messages import ConfigChanged
from tui.screens.base import TuneScreen, update_if_changed

def with_values(config: RunConfig, values: dict[str, Any]) -> RunConfig:
    """A new, validated config with dotted keys set to Python values (TuneError names the key when wrong)."""
    raw = to_dict(config)
    for dotted, value in values.items():
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return from_dict(raw)


def get_value(config: RunConfig, dotted: str) -> Any:
    """config["method.lora.r"], by attribute."""
    node: Any = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def parse_number(text: str) -> int | float | str | None:
    """What the user typed in a numeric field, read like a YAML value ("8" -> 8, "2e-4" stays for the config to
    read as a float, "abc" stays a string so the config names the key in its error)."""
    import yaml  # imported when used: the app's first frame need not pay for it

    text = text.strip()
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, str)) or value is None else text


class SetupScreen(TuneScreen):
    """A set-up screen. Subclasses set NAME, write compose_body(), and redraw in show_config()."""

    BINDINGS = [Binding("enter", "next", "Next"), Binding("escape", "leave_field", "Leave field")]
    SUBMIT_KEEPS: ClassVar[tuple[str, ...]] = ()
    """Ids of inputs whose Enter does something of its own (open a typed path): it does not also move on."""

    def __init__(self) -> None:
        super().__init__()
        self._own_config: RunConfig | None = None
        self._shown_config: RunConfig | None = None
        self._field_errors: dict[int, dict[int, str]] = {}

    @property
    def config(self) -> RunConfig:
        return self.app.config

    # ------------------------------------------------------------ keeping the view current

    def on_mount(self) -> None:
        self._show(self.app.config, from_self=False)

    def _on_screen_resume(self, event: ScreenResume) -> None:
        # Runs before Screen's own handler (the MRO order Textual dispatches in): skip its restyle of every
        # widget on each visit. With this many form widgets that costs hundreds of ms per screen switch, and
        # nothing here changes styles while a screen is hidden; a theme change is re-applied by switch_mode,
        # which compares the CSS update count.
        event.refresh_styles = False
        # Textual calls only one of `_on_screen_resume` / `on_screen_resume` defined in the same class (the
        # underscore one), so the redraw lives here too: a draft changed while the screen was hidden (another
        # model picked on Model) must show when it comes back. (TuneScreen's handler, called next, brings the
        # nav bar and snapshot_changed up to date.)
        if self._shown_config is not self.app.config:
            self._show(self.app.config, from_self=False)

    def on_config_changed(self, message: ConfigChanged) -> None:
        if not self.is_current:
            return  # hidden: on_screen_resume redraws if the draft changed meanwhile (keeps key presses cheap)
        if message.config is not self.app.config:
            # Stale: edits made since (several fields changed before this message came) have their own message
            # on the way. Redrawing from this one would write older values back into the fields just edited.
            return
        self._show(message.config, from_self=message.config is self._own_config)

    def _show(self, config: RunConfig, from_self: bool) -> None:
        self._shown_config = config
        self.show_config(config, from_self)

    def show_config(self, config: RunConfig, from_self: bool) -> None:
        """Redraw from `config`. `from_self`: this screen made the change, so leave its form fields alone
        (rewriting an Input the user is typing in would move their cursor)."""

    # ------------------------------------------------------------ editing the draft

    def apply(self, values: dict[str, Any], error: Static | None = None, field: Widget | None = None) -> bool:
        """Set dotted keys of the draft (`{"method.lora.r": 16}`) and validate the result like a config file.
        On a TuneError, mark `field` and show the message in `error` (which keeps showing the first field still
        wrong, so fixing one field never hides another's problem)."""
        errors = self._field_errors.setdefault(id(error), {})
        try:
            new = with_values(self.app.config, values)
        except TuneError as exc:
            if field is not None:
                field.add_class("-invalid")
                errors[id(field)] = str(exc)
            self._show_errors(error, errors, str(exc))
            return False
        if field is not None:
            field.remove_class("-invalid")
            errors.pop(id(field), None)
        self._show_errors(error, errors, None)
        if new != self.app.config:  # programmatic widget updates echo back unchanged values: no churn
            self._own_config = new
            if self.app.config_error:
                # The config file named on the command line failed and the demo stood in: an edit makes this
                # draft the user's own, so the failure stops blocking Launch (Review drops its banner).
                self.app.config_error = None
            self.app.set_config(new)
        return True

    def forget_errors(self, error: Static) -> None:
        """The fields behind `error` were rebuilt from the config: their old problems are gone."""
        self._field_errors.pop(id(error), None)
        self._show_errors(error, {}, None)

    @staticmethod
    def _show_errors(error: Static | None, errors: dict[int, str], latest: str | None) -> None:
        if error is None:
            return
        message = latest or next(iter(errors.values()), "")
        error.update(message)
        error.display = bool(message)

    def action_next(self) -> None:
        self.app.show_next(self.NAME)

    # ------------------------------------------------------------ keys that always navigate

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "leave_field":  # offered (and shown in the footer) only while a form field has the keys
            return isinstance(self.focused, (Input, Select, Checkbox))
        return True

    def action_leave_field(self) -> None:
        """Escape: give the keys back to the screen (digits switch screens, Enter goes on)."""
        self.set_focus(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        # Enter in a form field keeps what was typed (fields apply as they change) and goes on, as it does
        # anywhere else on the set-up screens.
        if event.input.id not in self.SUBMIT_KEEPS:
            self.set_focus(None)
            self.action_next()

    def on_descendant_focus(self, event: DescendantFocus) -> None:
        self.refresh_bindings()  # show or hide "esc Leave field"

    def on_descendant_blur(self, event: DescendantBlur) -> None:
        self.refresh_bindings()


__all__ = ["SetupScreen", "update_if_changed", "with_values", "get_value", "parse_number"]
