"""Small OpenDRIVE texts for tests: a minimal valid town (two 50 m roads, each the other's successor, one driving lane
each; in CARLA's frame the lane runs along y = +1.75 from x = 0 to x = 100) and its building blocks."""
from __future__ import annotations

HEADER = '<?xml version="1.0"?>\n<OpenDRIVE>\n<header revMajor="1" revMinor="4" name="" version="1"/>\n'


def road(rid: int, other: int, x: float, lanes: str | None = None, plan: str | None = None, junction: str = "-1",
         length: str = "50") -> str:
    """Road `rid` from (x, 0) along +x, `other` its predecessor and successor."""
    plan = plan if plan is not None else (f'<planView><geometry s="0" x="{x}" y="0" hdg="0" length="{length}"><line/>'
                                          '</geometry></planView>')
    lanes = lanes if lanes is not None else (
        '<lanes><laneSection s="0"><center><lane id="0" type="none" level="false"/></center><right>'
        '<lane id="-1" type="driving" level="false"><link><predecessor id="-1"/><successor id="-1"/></link>'
        '<width sOffset="0" a="3.5" b="0" c="0" d="0"/></lane></right></laneSection></lanes>')
    return (f'<road name="r{rid}" length="{length}" id="{rid}" junction="{junction}"><link>'
            f'<predecessor elementType="road" elementId="{other}" contactPoint="end"/>'
            f'<successor elementType="road" elementId="{other}" contactPoint="start"/></link>{plan}{lanes}</road>\n')


def town_text(first: str | None = None, tail: str = "") -> str:
    """The minimal town, road 0 replaced by `first` when given, `tail` appended inside <OpenDRIVE>."""
    return HEADER + (first if first is not None else road(0, 1, 0.0)) + road(1, 0, 50.0) + tail + "</OpenDRIVE>"
