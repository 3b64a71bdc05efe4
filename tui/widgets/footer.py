"""The footer every screen shows: Textual's Footer, recomposed only when the keys it shows change."""
from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeyFooter(Footer):
    """Textual's Footer recomposes (a dozen new FooterKey widgets, styled and laid out) each time the screen's
    bindings are refreshed, which happens on every screen switch and focus change even when the keys are the same.
    Measured at 100x30, that was about 40% of a screen switch. This one keeps its keys when what they would show is
    unchanged."""

    _shown: tuple | None = None

    def _signature(self, screen: Screen) -> tuple:
        return tuple((binding.key, binding.action, binding.description, enabled, tooltip)
                     for (_node, binding, enabled, tooltip) in screen.active_bindings.values() if binding.show)

    def bindings_changed(self, screen: Screen) -> None:
        if self.is_attached and screen is self.screen and screen.app.app_focus:
            signature = self._signature(screen)
            if self._bindings_ready and signature == self._shown:
                return
            self._shown = signature
        super().bindings_changed(screen)
