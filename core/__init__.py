"""tunetui's headless engine: config, events, training, resources. Never imports textual or tui."""
