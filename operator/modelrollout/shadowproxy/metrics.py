"""The comparison proxy's metric names: what it exports and what the builtins read.

Names only (no prometheus_client here): analysis/builtins.py imports them, and
the kubectl plugin, which imports the analysis package, installs no metrics
library. Every series carries `candidate` (the candidate revision); those with
two sides carry `side` (stable|candidate).
"""

from __future__ import annotations

PREFIX = "modelrollout_shadow"
# Comparisons completed: both answers in, within the window.
COMPARISONS = f"{PREFIX}_comparisons_total"
# Of those, greedy or seeded requests (temperature 0, top_k 1 or a seed), and how many
# of them the candidate answered exactly as stable did.
EXACT_COMPARISONS = f"{PREFIX}_exact_comparisons_total"
EXACT_MATCHES = f"{PREFIX}_exact_matches_total"
# Histograms, one observation per comparison: token-level agreement (0 to 1) and the
# candidate's answer length over stable's (in whitespace tokens).
TOKEN_AGREEMENT = f"{PREFIX}_token_agreement"
LENGTH_RATIO = f"{PREFIX}_length_ratio"
# Empty or refusing answers, by side.
EMPTY_ANSWERS = f"{PREFIX}_empty_answers_total"
# Compared requests that asked for JSON (response_format), and valid JSON answers by side.
JSON_REQUESTS = f"{PREFIX}_json_requests_total"
JSON_VALID = f"{PREFIX}_json_valid_total"
# Each side's latency (seconds to its last byte) for compared requests.
LATENCY = f"{PREFIX}_latency_seconds"
# Requests answered by stable through the proxy, and copies sent to the candidate.
REQUESTS = f"{PREFIX}_requests_total"
SAMPLED = f"{PREFIX}_sampled_total"
# Sampled requests never compared, by reason: candidate_error, stable_error, timeout, full.
DROPPED = f"{PREFIX}_dropped_total"
