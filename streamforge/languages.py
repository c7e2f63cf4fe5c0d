"""Language tags as BCP 47 wants them (ground level: the pipeline, the store and the web side use it): a media file's ISO 639-2 codes ("eng", "ger") become the
two-letter ISO 639-1 tag ("en", "de") wherever one exists, and each tag has a readable name.

Matroska and MP4 store ISO 639-2, in its bibliographic ("ger", "fre", "chi") or terminological
("deu", "fra", "zho") form; BCP 47 (RFC 5646 section 2.2.1) asks for the shortest ISO 639 code, so
both forms map to the same two letters. A three-letter code with no two-letter twin is already a
valid BCP 47 primary tag and is kept as it is.
"""
from __future__ import annotations

import re

# two-letter tag: (English name, ISO 639-2/T, ISO 639-2/B where it differs)
_LANGUAGES = {
    "af": ("Afrikaans", "afr"), "am": ("Amharic", "amh"), "ar": ("Arabic", "ara"),
    "az": ("Azerbaijani", "aze"), "be": ("Belarusian", "bel"), "bg": ("Bulgarian", "bul"),
    "bn": ("Bengali", "ben"), "bo": ("Tibetan", "bod", "tib"), "bs": ("Bosnian", "bos"),
    "ca": ("Catalan", "cat"), "cs": ("Czech", "ces", "cze"), "cy": ("Welsh", "cym", "wel"),
    "da": ("Danish", "dan"), "de": ("German", "deu", "ger"), "el": ("Greek", "ell", "gre"),
    "en": ("English", "eng"), "eo": ("Esperanto", "epo"), "es": ("Spanish", "spa"),
    "et": ("Estonian", "est"), "eu": ("Basque", "eus", "baq"), "fa": ("Persian", "fas", "per"),
    "fi": ("Finnish", "fin"), "fo": ("Faroese", "fao"), "fr": ("French", "fra", "fre"),
    "ga": ("Irish", "gle"), "gd": ("Scottish Gaelic", "gla"), "gl": ("Galician", "glg"),
    "gu": ("Gujarati", "guj"), "he": ("Hebrew", "heb"), "hi": ("Hindi", "hin"),
    "hr": ("Croatian", "hrv"), "hu": ("Hungarian", "hun"), "hy": ("Armenian", "hye", "arm"),
    "id": ("Indonesian", "ind"), "is": ("Icelandic", "isl", "ice"), "it": ("Italian", "ita"),
    "ja": ("Japanese", "jpn"), "jv": ("Javanese", "jav"), "ka": ("Georgian", "kat", "geo"),
    "kk": ("Kazakh", "kaz"), "km": ("Khmer", "khm"), "kn": ("Kannada", "kan"),
    "ko": ("Korean", "kor"), "ku": ("Kurdish", "kur"), "ky": ("Kyrgyz", "kir"),
    "la": ("Latin", "lat"), "lb": ("Luxembourgish", "ltz"), "lo": ("Lao", "lao"),
    "lt": ("Lithuanian", "lit"), "lv": ("Latvian", "lav"), "mi": ("Maori", "mri", "mao"),
    "mk": ("Macedonian", "mkd", "mac"), "ml": ("Malayalam", "mal"), "mn": ("Mongolian", "mon"),
    "mr": ("Marathi", "mar"), "ms": ("Malay", "msa", "may"), "mt": ("Maltese", "mlt"),
    "my": ("Burmese", "mya", "bur"), "nb": ("Norwegian Bokmål", "nob"), "ne": ("Nepali", "nep"),
    "nl": ("Dutch", "nld", "dut"), "nn": ("Norwegian Nynorsk", "nno"), "no": ("Norwegian", "nor"),
    "pa": ("Punjabi", "pan"), "pl": ("Polish", "pol"), "ps": ("Pashto", "pus"),
    "pt": ("Portuguese", "por"), "ro": ("Romanian", "ron", "rum"), "ru": ("Russian", "rus"),
    "si": ("Sinhala", "sin"), "sk": ("Slovak", "slk", "slo"), "sl": ("Slovenian", "slv"),
    "so": ("Somali", "som"), "sq": ("Albanian", "sqi", "alb"), "sr": ("Serbian", "srp"),
    "sv": ("Swedish", "swe"), "sw": ("Swahili", "swa"), "ta": ("Tamil", "tam"),
    "te": ("Telugu", "tel"), "tg": ("Tajik", "tgk"), "th": ("Thai", "tha"),
    "tl": ("Tagalog", "tgl"), "tr": ("Turkish", "tur"), "uk": ("Ukrainian", "ukr"),
    "ur": ("Urdu", "urd"), "uz": ("Uzbek", "uzb"), "vi": ("Vietnamese", "vie"),
    "yi": ("Yiddish", "yid"), "yo": ("Yoruba", "yor"), "zh": ("Chinese", "zho", "chi"),
    "zu": ("Zulu", "zul"),
}
# the ISO 639-2 codes that mean "no language given"
_UNDETERMINED = {"und", "unk", "mis", "mul", "zxx", "xxx", "non", "none"}
_THREE_TO_TWO = {code: two for two, entry in _LANGUAGES.items() for code in entry[1:]}
_TAG = re.compile(r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{1,8})*$")


def normalise_language(value: str | None) -> str:
    """A BCP 47 tag: ISO 639-2 codes become two letters ("ger" -> "de"), unknown or empty is "und"."""
    value = (value or "").strip().replace("_", "-")
    if not value or not _TAG.match(value):
        return "und"
    head, _, rest = value.partition("-")
    head = head.lower()
    if head in _UNDETERMINED:
        return "und"
    head = _THREE_TO_TWO.get(head, head)
    if not rest:
        return head
    # a region stays upper case ("pt-BR"), a script title case ("zh-Hant"), as BCP 47 writes them
    parts = [p.upper() if len(p) == 2 else p.title() if len(p) == 4 else p.lower() for p in rest.split("-")]
    return "-".join([head, *parts])


def language_name(tag: str) -> str:
    """The English name of a BCP 47 tag's language ("de-AT" -> "German"); "" when unknown."""
    head = (tag or "").split("-")[0].lower()
    entry = _LANGUAGES.get(head)
    return entry[0] if entry else ""


def valid_language(value) -> bool:
    """True for a language tag the API accepts (en, pt-BR, und...)."""
    return isinstance(value, str) and len(value) <= 35 and bool(_TAG.match(value))
