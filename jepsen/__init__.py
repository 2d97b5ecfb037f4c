"""Black-box fault-injection harness. Talks to servers only over the network and through
processes, never by importing the server code."""
