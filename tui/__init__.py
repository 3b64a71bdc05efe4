"""tunetui's front ends: the Textual app and the headless CLI commands. Thin: all logic lives in core/."""
