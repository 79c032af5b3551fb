"""A tiny persisted actor kind: the kernel's storage tests and `bench/actors.py` use it.

A `TallyActor` is a virtual actor that keeps one named count in the `demo_tally` table: it
loads the count in `started()` and writes every change in a short transaction before it
answers, so a crash or a passivation loses nothing that was acknowledged. It exists to show
(and test) the kernel's restart-from-storage contract without any network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee

from actors.kernel import Actor, ActorContext
from storage.database import Migration, bind_models


class Tally(peewee.Model):
    name = peewee.CharField(primary_key=True, max_length=200)
    count = peewee.IntegerField(default=0)

    class Meta:
        table_name = "demo_tally"


def _create_tally_table(db: peewee.Database) -> None:
    db.create_tables(list(bind_models(db, Tally)))


TALLY_MIGRATIONS = (Migration(1, "demo tally table", _create_tally_table),)


@dataclass(frozen=True)
class Add:
    amount: int = 1


@dataclass(frozen=True)
class Read:
    pass


@dataclass(frozen=True)
class CrashOnPurpose:
    pass


class TallyActor(Actor):
    kind = "tally"

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.tally = ctx.runtime.database.bind(Tally).Tally
        self.count = 0

    def started(self) -> None:
        with self.transaction():
            row = self.tally.get_or_none(self.tally.name == self.ctx.key)
        self.count = row.count if row is not None else 0

    def receive(self, message: Any) -> Any:
        match message:
            case Add(amount=amount):
                with self.transaction():
                    self.tally.insert(name=self.ctx.key, count=self.count + amount).on_conflict(
                        conflict_target=[self.tally.name],
                        update={self.tally.count: self.count + amount},
                    ).execute()
                self.count += amount
                return self.count
            case Read():
                return self.count
            case CrashOnPurpose():
                raise RuntimeError("crashed on purpose by the demo")
            case _:
                return super().receive(message)

    def summary(self) -> dict[str, Any]:
        return {"count": self.count}
