"""The example chat project's configuration: settings, URLs and channel routing."""
