"""pst.train.pseudo.instance_pseudo_labels: clustering each thing class's mask on its own
against clustering an instance model's whole group, and the clean-up that follows."""

from __future__ import annotations

import dataclasses

import torch

from pst.config import InstancePseudoConfig
from pst.panoptic import fuse
from pst.train.pseudo import instance_pseudo_labels

PERSON, RIDER, CAR = 5, 6, 7


def _scene():
    """Two objects. A (columns 2..9) has one embedding but its pixels split between person
    (left half) and rider (right half); B (columns 14..19) is a person with another embedding."""
    H, W = 12, 24
    sem = torch.zeros(1, H, W, dtype=torch.long)  # road
    emb = torch.zeros(1, 3, H, W)
    sem[0, 2:10, 2:6] = PERSON
    sem[0, 2:10, 6:10] = RIDER
    emb[0, :, 2:10, 2:10] = torch.tensor([4.0, 0.0, 0.0]).view(3, 1, 1)
    sem[0, 2:10, 14:20] = PERSON
    emb[0, :, 2:10, 14:20] = torch.tensor([0.0, 4.0, 0.0]).view(3, 1, 1)
    return emb, sem


def _cfg(**kw):
    return dataclasses.replace(InstancePseudoConfig(bandwidth=1.0, min_size=4, close_radius=0, fill_holes=False), **kw)


def test_group_clustering_keeps_an_object_split_between_classes_whole():
    emb, sem = _scene()
    obj = torch.ones(sem.shape)
    by_class = instance_pseudo_labels(emb, obj, sem, [PERSON, RIDER], _cfg(cluster_within="class"))
    by_group = instance_pseudo_labels(emb, obj, sem, [PERSON, RIDER], _cfg(cluster_within="group"))
    a = (slice(None), slice(2, 10), slice(2, 10))
    assert by_class[a].unique().numel() == 2  # A split in two: its person half and its rider half
    assert by_group[a].unique().numel() == 1 and int(by_group[a].unique()) > 0
    assert by_group[0, 2:10, 14:20].unique().numel() == 1
    assert by_group[0, 5, 5] != by_group[0, 5, 15]
    assert torch.equal(by_group > 0, (sem == PERSON) | (sem == RIDER))
    # fusion gives the whole object the class most of its pixels have (a tie: the lower id)
    pan = fuse(sem[0], by_group[0], thing_ids=[PERSON, RIDER, CAR], num_classes=8, stuff_area=0)
    assert pan[2:10, 2:10].unique().tolist() == [PERSON * 1000 + int(by_group[0, 5, 5])]


def test_group_clustering_with_one_class_equals_class_clustering():
    emb, sem = _scene()
    obj = torch.rand(sem.shape, generator=torch.Generator().manual_seed(0))
    for kw in ({}, {"close_radius": 1, "fill_holes": True}):
        a = instance_pseudo_labels(emb, obj, sem, [PERSON], _cfg(cluster_within="class", **kw), seed=3)
        b = instance_pseudo_labels(emb, obj, sem, [PERSON], _cfg(cluster_within="group", **kw), seed=3)
        assert torch.equal(a, b)


def test_group_refinement_stays_inside_the_group_mask():
    emb, sem = _scene()
    sem[0, 5, 4] = 0  # a hole in A that closing fills
    obj = torch.ones(sem.shape)
    inst = instance_pseudo_labels(emb, obj, sem, [PERSON, RIDER], _cfg(cluster_within="group", close_radius=1,
                                                                       fill_holes=True))
    assert int(inst[0, 5, 4]) == 0  # not a pixel of the group: refinement may not claim it
    assert not bool(((inst > 0) & ~((sem == PERSON) | (sem == RIDER))).any())
