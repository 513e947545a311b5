"""The data plane: one predict for every protocol and verb, where canary and shadow routing, the
payload log, drift and the prediction metrics happen, once."""
