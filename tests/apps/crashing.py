"""An app whose workers crash while starting (exit 3): a crash loop, not a load error."""
import os

os._exit(3)
