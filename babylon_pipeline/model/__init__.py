"""The agent's language model: the tokenizer and tiny base built locally for the embedded profile,
its supervised warm start on the simulator, and the policy that samples actions from it."""
