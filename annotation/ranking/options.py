"""The fit's option names, free of numpy and scipy: the URLs, the API schema and the query-string
parser read them in every process at start-up, before anything is fitted."""

METHODS = ("bradley_terry", "davidson")
RESAMPLE = ("question", "vote")
