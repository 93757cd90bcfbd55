"""Authentication (ZTDP tokens, optional OIDC) and the roles that authorize requests."""

from ztdp.auth.authenticator import Authenticator
from ztdp.auth.clients import ClientAddresses
from ztdp.auth.identity import ANONYMOUS, Grant, Identity, Role
from ztdp.auth.limiter import FailureLimiter, MemoryFailureLimiter, RedisFailureLimiter
from ztdp.auth.oidc import OidcVerifier
from ztdp.auth.tokens import MemoryTokenStore, RedisTokenStore, TokenInfo, Tokens, TokenStore

__all__ = [
    "ANONYMOUS",
    "Authenticator",
    "ClientAddresses",
    "FailureLimiter",
    "Grant",
    "Identity",
    "MemoryFailureLimiter",
    "MemoryTokenStore",
    "OidcVerifier",
    "RedisFailureLimiter",
    "RedisTokenStore",
    "Role",
    "TokenInfo",
    "TokenStore",
    "Tokens",
]
