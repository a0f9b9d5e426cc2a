"""The catalogue: every feature of clusterd, in the order they are listed and shown.

Membership first (the features cluster operations edit), the pending confirmed
commits (internal too), then the mail features, then
access (cluster level only), then the network features (machine level only).
"""

from __future__ import annotations

from clusterd.schema.access import ACCESS_FEATURES
from clusterd.schema.feature import Catalogue
from clusterd.schema.history import HISTORY_FEATURES
from clusterd.schema.mail import MAIL_FEATURES
from clusterd.schema.membership import MEMBERSHIP_FEATURES
from clusterd.schema.network import NETWORK_FEATURES

CATALOGUE = Catalogue(
    [*MEMBERSHIP_FEATURES, *HISTORY_FEATURES, *MAIL_FEATURES, *ACCESS_FEATURES, *NETWORK_FEATURES]
)
