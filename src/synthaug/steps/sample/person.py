"""Person columns: locale-aware names, places, jobs and contacts from Faker (offline data).

A person is a mapping of the chosen `fields`. The sex is drawn first and the first name
follows it; the age is uniform in `age` and the birth date is consistent with it on the fixed
day `as_of` (not today, so a rerun next year gives the same people); the email is made from
the name. Each field draws with its own seed, so asking for more fields leaves the others as
they were. Values depend on the Faker version: the samplers extra pins a minimum.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from functools import cache
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from synthaug.steps.sample.columns import ColumnBase

PersonField = Literal["name", "first_name", "last_name", "sex", "age", "birth_date", "city",
                      "country", "job", "email", "phone", "address", "company"]
Sex = Literal["female", "male"]
SEXES: list[Sex] = ["female", "male"]
DEFAULT_FIELDS: list[PersonField] = ["name", "first_name", "last_name", "sex", "age",
                                     "birth_date", "city", "country", "job", "email", "phone"]


@cache
def _faker(locale: str) -> Any:
    """One Faker per locale (building one loads its providers); raises ValueError if unknown."""
    try:
        from faker import Faker
    except ImportError:
        raise ValueError("person columns need Faker: pip install 'synthaug[samplers]'") from None
    try:
        return Faker(locale)
    except AttributeError:
        raise ValueError(f"Faker has no locale {locale!r} (e.g. en_US, de_DE, ja_JP)") from None


class PersonColumn(ColumnBase):
    """A person: {field: value} for `fields`, in the customs of `locale`."""

    type: Literal["person"]
    locale: str = "en_US"
    fields: list[PersonField] = Field(default_factory=lambda: list(DEFAULT_FIELDS), min_length=1)
    age: tuple[int, int] = (18, 85)
    sex: list[Sex] = Field(default_factory=lambda: list(SEXES), min_length=1)
    as_of: dt.date = dt.date(2025, 1, 1)  # the day ages are counted to
    _fake: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _check(self) -> PersonColumn:
        low, high = self.age
        if not 0 <= low <= high <= 120:
            raise ValueError(f"age must be [low, high] within 0..120, got {list(self.age)}")
        self._fake = _faker(self.locale)
        try:
            self.draw(random.Random(0), {})
        except (AttributeError, ValueError, TypeError) as exc:
            raise ValueError(f"locale {self.locale!r} cannot make these fields: {exc}") from None
        return self

    def draw(self, rng: random.Random, row: dict[str, Any]) -> Any:
        seed = rng.getrandbits(32)
        sex = random.Random(f"{seed}:sex").choice(self.sex)
        made: dict[str, Any] = {"sex": sex}
        made["first_name"] = self._field(seed, "first_name_female" if sex == "female"
                                         else "first_name_male")
        made["last_name"] = self._field(seed, "last_name")
        made["name"] = f"{made['first_name']} {made['last_name']}"
        made["age"] = random.Random(f"{seed}:age").randint(*self.age)
        made["birth_date"] = self._birth_date(seed, made["age"]).isoformat()
        wanted = set(self.fields)
        for name, method in (("city", "city"), ("country", "current_country"), ("job", "job"),
                             ("phone", "phone_number"), ("address", "address"),
                             ("company", "company")):
            if name in wanted:
                made[name] = self._field(seed, method)
        if "email" in wanted:
            made["email"] = self._email(seed, made["first_name"], made["last_name"])
        return {name: made[name] for name in self.fields}

    def _field(self, seed: int, method: str) -> str:
        """One Faker field with its own seed (other fields do not shift it)."""
        self._fake.seed_instance(f"{seed}:{method}")
        return str(getattr(self._fake, method)())

    def _birth_date(self, seed: int, age: int) -> dt.date:
        """A birth date at which a person is `age` years old on `as_of`."""
        latest = _years_before(self.as_of, age)
        earliest = _years_before(self.as_of, age + 1) + dt.timedelta(days=1)
        span = (latest - earliest).days
        return earliest + dt.timedelta(days=random.Random(f"{seed}:born").randint(0, span))

    def _email(self, seed: int, first: str, last: str) -> str:
        """first.last@a free-mail domain of the locale (ASCII; Faker's user name if none)."""
        from faker.decode import unidecode

        local = ".".join(re.sub(r"[^a-z0-9]", "", unidecode(part).lower())
                         for part in (first, last))
        if not re.fullmatch(r"[a-z0-9]+\.[a-z0-9]+", local):
            local = self._field(seed, "user_name")
        return f"{local}@{self._field(seed, 'free_email_domain')}"


def _years_before(day: dt.date, years: int) -> dt.date:
    """The same calendar day `years` earlier (28 February for 29 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)
