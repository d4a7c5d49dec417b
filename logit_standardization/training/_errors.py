"""Error type of the training tools: a message for the user, no traceback needed."""


class TrainingError(ValueError):
    """Bad recipe, missing data or checkpoint, or a checkpoint that does not fit: the message says why."""
