"""MSISDNs are personal data: anything that reaches a log or a metric goes through here."""

__all__ = ["mask_msisdn"]


def mask_msisdn(msisdn) -> str:
    """'13800138000' -> '138****8000'; short numbers keep less so that most digits stay hidden."""
    digits = str(msisdn)
    if len(digits) >= 8:
        return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]
    if len(digits) >= 3:
        return digits[:1] + "*" * (len(digits) - 2) + digits[-1:]
    return "*" * len(digits)
