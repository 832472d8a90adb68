"""The example Django chat project that ``make run`` serves."""
