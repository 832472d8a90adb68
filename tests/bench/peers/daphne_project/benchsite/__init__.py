"""The benchmark's Channels 4 project (copied into .bench/ and run by daphne)."""
