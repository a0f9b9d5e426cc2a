"""The catalogue: every feature of clusterd, in the order they are listed and shown.

Membership first (the features cluster operations edit), then the mail features, then
access (cluster level only), then the network features (machine level only).
"""

from __future__ import annotations

from schema.access import ACCESS_FEATURES
from schema.feature import Catalogue
from schema.mail import MAIL_FEATURES
from schema.membership import MEMBERSHIP_FEATURES
from schema.network import NETWORK_FEATURES

CATALOGUE = Catalogue([*MEMBERSHIP_FEATURES, *MAIL_FEATURES, *ACCESS_FEATURES, *NETWORK_FEATURES])
