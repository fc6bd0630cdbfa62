"""`python -m synthaug.testing --delay 0.1`: a standalone fake OpenAI-compatible server."""

from synthaug.testing.server import main

main()
