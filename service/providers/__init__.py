"""AI providers behind one interface (service.providers.base.Provider)."""
from service.providers.base import Provider, ProviderError, ProviderResult, TextRequest
from service.providers.local import LocalProvider
from service.providers.manager import ProviderManager
from service.providers.openai_compat import OpenAIProvider

__all__ = ["LocalProvider", "OpenAIProvider", "ProviderManager", "Provider", "ProviderError",
           "ProviderResult", "TextRequest"]
