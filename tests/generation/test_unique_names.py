"""A second row of a taken name is refused with the service's message and writes nothing
(generation/unique.py, shared by data sets, preference data sets and models)."""

import pytest
from django.db import IntegrityError

from evalsite.errors import ServiceError
from generation.instructions import ParsedExample
from generation.models import InstructionDataset, InstructionExample, PreferenceDataset
from generation.training.data import DATASET_NAME_TAKEN, instruction_dataset_create
from generation.training.preferences import NAME_TAKEN, preference_dataset_create
from generation.unique import atomic_named

pytestmark = pytest.mark.django_db

EXAMPLES = [
    ParsedExample(1, "二たす二は？", "四です。"),
    ParsedExample(2, "空の色は？", "青です。"),
]
PAIRS = [{"prompt": "Q: 1+1?\nA: ", "chosen": "2", "rejected": "3"}]


def test_a_second_instruction_data_set_of_that_name_is_refused_and_writes_no_rows():
    first = instruction_dataset_create(name="ja-qa", examples=EXAMPLES)
    with pytest.raises(ServiceError) as refused:
        instruction_dataset_create(name="ja-qa", examples=EXAMPLES[:1])
    assert str(refused.value) == DATASET_NAME_TAKEN.format(name="ja-qa")
    assert InstructionDataset.objects.filter(name="ja-qa").count() == 1
    assert InstructionExample.objects.count() == first.examples.count() == 2


def test_a_second_preference_data_set_of_that_name_is_refused():
    preference_dataset_create(name="prefs", pairs=PAIRS)
    with pytest.raises(ServiceError) as refused:
        preference_dataset_create(name="prefs", pairs=PAIRS * 2)
    assert str(refused.value) == NAME_TAKEN.format(name="prefs")
    assert PreferenceDataset.objects.get(name="prefs").pairs.count() == 1


def test_a_clash_that_is_not_the_name_is_raised_as_it_is_and_rolled_back():
    naming = atomic_named(InstructionDataset, "fresh", DATASET_NAME_TAKEN)
    with pytest.raises(IntegrityError), naming:
        dataset = InstructionDataset.objects.create(name="fresh")
        row = {"instruction": "a", "output": "b", "position": 1}
        InstructionExample.objects.create(dataset=dataset, **row)
        InstructionExample.objects.create(dataset=dataset, **row)  # the same position
    assert not InstructionDataset.objects.filter(name="fresh").exists()
