"""The commands on top (`python -m rightwhale COMMAND`): identify, catalogue, evaluate, ensemble, reproduce."""
