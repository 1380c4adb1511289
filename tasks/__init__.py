"""Click commands of the cnnpipe CLI: thin wrappers around pipeline/, one module per stage."""
