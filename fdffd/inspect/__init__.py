"""Looking at finished drives from outside: what two drives share that ordinary ones would not."""
