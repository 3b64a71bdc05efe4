"""tunetui's terminal front end (Textual). Thin: all logic lives in core/."""
