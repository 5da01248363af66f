"""Plant known bugs, one at a time, and check that the suite catches each.

    python -m tests.mutation.mutants            # each mutant against the tests aimed at it
    python -m tests.mutation.mutants --full     # each mutant against the whole suite (hours)
    python -m tests.mutation.mutants --only fsync-off

Each mutant copies the checkout to a scratch folder, replaces one snippet of one
file, and runs pytest there; a mutant the tests do not fail has *survived*. The
list below is the record of how the suite was checked: the bug, where, and the
test aimed at it (issue 11 found four that survived the whole suite, and three
caught only by accident; each now has its test). Add a mutant whenever a test is
written for a bug.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    caught_by: tuple[str, ...]


MUTANTS = [
    # -- issue 11: survived the whole suite ------------------------------------------------
    Mutant(
        "proof-index-unbounded",
        "crdt_mesh/ledger/entry.py",
        "not 0 <= index < (1 << len(siblings))",
        "not 0 <= index",
        (
            "tests/unit/test_group_signatures.py::"
            "test_a_proof_index_with_bits_above_its_depth_is_malformed_not_a_new_encoding",
        ),
    ),
    Mutant(
        "local-offered-to-peers",
        "crdt_mesh/replica/replica.py",
        "        if document.policy is Policy.LOCAL:\n            return False\n",
        "",
        (
            "tests/unit/test_sync_session.py::test_the_sender_never_offers_a_local_entry",
            "tests/stateful/test_mesh_convergence.py",
        ),
    ),
    Mutant(
        "fsync-off",  # the journal's record written, not flushed
        "crdt_mesh/journal.py",
        "        if self._direct_fd < 0:\n"
        "            _write(self._fd, head + payload, self._offset)\n"
        "            os.fdatasync(self._fd)\n",
        "        if True:\n            _write(self._fd, head + payload, self._offset)\n",
        ("tests/integration/test_durability.py",),
    ),
    # -- issue 17: the journal --------------------------------------------------------------
    Mutant(
        "checkpoint-state-not-held",
        "crdt_mesh/store.py",
        "        pin, self._pin = self._pin, self._env.begin(write=False)\n",
        "        pin, self._pin = self._pin, None\n",
        ("tests/unit/test_journal.py",),
    ),
    Mutant(
        "meta-pages-not-restored",
        "crdt_mesh/store.py",
        "            if checkpoint is not None and checkpoint.meta_pages:\n",
        "            if False:\n",
        ("tests/unit/test_journal.py",),
    ),
    Mutant(
        "torn-record-replayed",
        "crdt_mesh/journal.py",
        "            if _digest(head[:-_DIGEST_SIZE], payload) != digest:\n",
        "            if False:\n",
        ("tests/unit/test_journal.py",),
    ),
    Mutant(
        "journal-kept-after-a-purge",
        "crdt_mesh/store.py",
        "                self._journal.scrub()  # its records may hold what was purged\n",
        "",
        (
            "tests/unit/test_purge.py::"
            "test_a_purged_feed_takes_nothing_back_and_stays_purged_after_reopening",
        ),
    ),
    Mutant(
        "direct-write-padding-not-cleared",
        "crdt_mesh/journal.py",
        "        buffer[size:blocks] = bytes(blocks - size)  # no bytes of an earlier record\n",
        "",
        ("tests/unit/test_journal.py",),
    ),
    Mutant(
        "broadcast-ttl-not-decremented",
        "crdt_mesh/services/gossip/epidemic.py",
        "self._activate(message_id, body, signature, travelled, fanout, avoid, members)",
        "self._activate(message_id, body, signature, hops, fanout, avoid, members)",
        (
            "tests/unit/test_epidemic.py::test_a_message_followed_hop_by_hop_travels_exactly_its_ttl",
        ),
    ),
    # -- issue 11: caught only by accident before ------------------------------------------
    Mutant(
        "events-before-commit",
        "crdt_mesh/replica/replica.py",
        "        self._store.write(work)\n"
        "        self._state.docs[document.id.key] = document.id\n"
        "        self._state.heads[(document.id, self.peer_id)] = Head(entry.seq, entry.id)\n"
        "        self._after_commit([entry], local=True)",
        "        self._state.docs[document.id.key] = document.id\n"
        "        self._state.heads[(document.id, self.peer_id)] = Head(entry.seq, entry.id)\n"
        "        self._after_commit([entry], local=True)\n"
        "        self._store.write(work)",
        (
            "tests/unit/test_replica.py::test_observers_and_hooks_run_only_once_the_entry_is_durable",
        ),
    ),
    Mutant(
        "root-cache-by-signature",
        "crdt_mesh/ledger/entry.py",
        "        if self.proof is not None and signed in _VERIFIED_ROOTS:",
        "        if self.proof is not None and signed[:64] in {k[:64] for k in _VERIFIED_ROOTS}:",
        (
            "tests/unit/test_group_signatures.py::test_a_checked_root_vouches_for_its_own_paths_only",
        ),
    ),
    Mutant(
        "swim-incarnation-reversed",
        "crdt_mesh/services/gossip/swim.py",
        "member.status is Status.LEFT or incarnation < member.incarnation:",
        "member.status is Status.LEFT or incarnation > member.incarnation:",
        ("tests/unit/test_swim.py::test_a_stale_suspicion_never_wins_over_a_newer_incarnation",),
    ),
    # -- issue 10: the defences against hostile peers ---------------------------------------
    Mutant(
        "overlapping-parts-allowed",
        "crdt_mesh/sync/messages.py",
        "            if previous_upper is not None and part.lower < previous_upper:",
        "            if False:",
        (
            "tests/unit/test_sync_hostile.py::"
            "test_a_frame_repeating_the_whole_range_is_a_breach_and_queues_nothing",
        ),
    ),
    Mutant(
        "answers-not-checked",
        "crdt_mesh/sync/session.py",
        "        self._check_answers(message.parts)\n",
        "",
        ("tests/unit/test_sync_hostile.py::test_an_answer_outside_the_questions_is_a_breach",),
    ),
    Mutant(
        "wants-not-merged",
        "crdt_mesh/sync/session.py",
        "        self._wants[need.key] = need if known is None else known.merge(need)",
        "        self._wants[need.key + bytes(len(self._wants) % 7)] = need",
        (
            "tests/unit/test_sync_hostile.py::"
            "test_rounds_reopened_before_the_link_drains_merge_into_one_want_per_feed",
        ),
    ),
    Mutant(
        "resends-unbounded",
        "crdt_mesh/runtime/peer.py",
        "            if history.allowance <= 0:  # only what it was not sent yet",
        "            if False:",
        (
            "tests/unit/test_sync_hostile.py::"
            "test_a_peer_that_keeps_claiming_to_lack_everything_gets_the_store_once",
            "tests/unit/test_sync_hostile.py::test_history_sends_only_the_holes_of_what_was_pushed",
        ),
    ),
    Mutant(
        "pending-unfair",
        "crdt_mesh/replica/pending.py",
        "            if self.held_by(largest) < self.held_by(source) + size:",
        "            if True:",
        ("tests/unit/test_pending.py",),
    ),
    Mutant(
        "pending-no-quota",
        "crdt_mesh/replica/pending.py",
        "            while self.held_by(source) + size > limits.per_source:",
        "            while False:",
        ("tests/unit/test_pending.py",),
    ),
    Mutant(
        "sealed-bid-unbound",
        "crdt_mesh/commitment.py",
        "    bound = cbor2.dumps([about, committer.key, value, nonce], canonical=True)",
        "    bound = cbor2.dumps([about, value, nonce], canonical=True)",
        (
            "tests/unit/test_tasks.py::test_a_decider_cannot_pass_off_a_copied_bid_as_the_copiers",
            "tests/unit/test_reputation_disputes.py::"
            "test_votes_count_only_from_jurors_committed_and_revealed_in_time",
        ),
    ),
    Mutant(
        "sealed-bid-unpadded",
        "crdt_mesh/commitment.py",
        '    return framed.ljust(size, b"\\x00")',
        "    return framed",
        ("tests/unit/test_tasks.py::test_a_sealed_box_says_nothing_of_the_price_by_its_length",),
    ),
    Mutant(
        "hop-ceiling-ignored",
        "crdt_mesh/services/gossip/epidemic.py",
        "        if hops >= ttl:",
        "        if False:",
        ("tests/unit/test_epidemic.py::test_a_relay_cannot_raise_the_signed_limits",),
    ),
    Mutant(
        "broadcast-window-ignored",
        "crdt_mesh/services/gossip/epidemic.py",
        "        if created <= self._low_water or created < now - self.window:",
        "        if False:",
        (
            "tests/unit/test_epidemic.py::test_only_messages_within_the_window_are_accepted",
            "tests/unit/test_epidemic.py::test_a_restarted_broadcaster_refuses_what_came_before_it",
        ),
    ),
    Mutant(
        "penalties-never-refuse",
        "crdt_mesh/runtime/penalty.py",
        "        if record.score < self.settings.threshold or now < record.banned_until:",
        "        if True:",
        ("tests/unit/test_penalty.py",),
    ),
    Mutant(
        "handshakes-inline",
        "transports/tcp.py",
        "                tg.start_soon(self._serve_one, stream, host, address, handler)",
        "                await self._serve_one(stream, host, address, handler)",
        ("tests/integration/test_hostile.py::test_stalled_handshakes_hold_up_nobody",),
    ),
    # -- issue 14: federated memory -----------------------------------------------------
    Mutant(
        "team-memory-offered-to-all",
        "crdt_mesh/services/memory/board.py",
        "        return peer in self._group_members(scope)",
        "        return True",
        ("tests/integration/test_memory_privacy.py::test_each_level_reaches_exactly_whom_it_may",),
    ),
    Mutant(
        "forget-without-compaction",
        "crdt_mesh/services/memory/board.py",
        "        if purged:\n            self.replica.compact()\n",
        "",
        (
            "tests/integration/test_memory_privacy.py::"
            "test_forgetting_leaves_no_plaintext_in_any_store_that_held_it",
        ),
    ),
    Mutant(
        "public-memory-offered-to-all",
        "crdt_mesh/services/memory/board.py",
        "        if verdict is False or self.interests.both_follow(document, peer) is False:",
        "        if verdict is False:",
        ("tests/integration/test_memory_privacy.py::test_each_level_reaches_exactly_whom_it_may",),
    ),
    Mutant(
        "spam-memory-names-a-peer",
        "crdt_mesh/services/memory/interests.py",
        "isinstance(k, str) and k != EVERYTHING and _KEY.fullmatch(k)",
        "isinstance(k, str)",
        (
            "tests/unit/test_memory_interests.py::"
            "test_an_author_cannot_make_its_memory_reach_a_peer_that_follows_nothing_it_names",
        ),
    ),
    Mutant(
        "admins-never-reconcile",
        "crdt_mesh/services/memory/groups.py",
        "                self.me in group.admins\n                and self._can_seal(",
        "                False\n                and self._can_seal(",
        ("tests/property/test_memory_admins.py",),
    ),
    Mutant(
        "lost-query-frames-never-sent-again",
        "crdt_mesh/services/memory/federation.py",
        "            self.resent += 1\n            self._send(key[2], frame)\n",
        "            self.resent += 1\n",
        (
            "tests/integration/test_memory_recall.py",
            "tests/unit/test_memory_federation.py::"
            "test_a_frame_is_sent_again_until_it_is_acknowledged_and_no_more_than_sends_times",
        ),
    ),
    Mutant(
        "semantic-shortlist-of-the-worst",
        "crdt_mesh/services/memory/search.py",
        "        picked = np.argpartition(-coarse, shortlist - 1)[:shortlist]",
        "        picked = np.argpartition(coarse, shortlist - 1)[:shortlist]",
        (
            "tests/unit/test_memory_query.py::"
            "test_the_two_stage_semantic_ranking_of_large_corpora_finds_what_exact_cosine_finds",
        ),
    ),
    Mutant(
        "misstated-reputation-passes-the-audit",
        "crdt_mesh/services/reputation/board.py",
        "        if expected != score:",
        "        if False:",
        (
            "tests/unit/test_reputation.py::"
            "test_a_close_pins_the_evidence_of_its_scores_and_a_misstated_score_is_flagged",
        ),
    ),
    Mutant(
        "outcome-by-anyone-counts",
        "crdt_mesh/services/reputation/rules.py",
        "        if author != decider:",
        "        if False:",
        (
            "tests/unit/test_reputation.py::"
            "test_records_not_tied_to_a_real_award_are_refused_or_ignored_with_reasons",
        ),
    ),
    Mutant(
        "member-entry-waits-for-an-acl-entry-only",
        "crdt_mesh/replica/admission.py",
        "            self.owners_grew.add(entry.document)",
        "            pass",
        (
            "tests/unit/test_ingest_rules.py::"
            "test_member_entry_citing_an_owner_update_is_admitted_when_that_update_arrives",
        ),
    ),
    # -- issue 15: challenges and disputes --------------------------------------------------
    Mutant(
        "open-challenge-does-not-suspend",
        "crdt_mesh/services/reputation/board.py",
        "            if found.status in (ChallengeStatus.OPEN, ChallengeStatus.UPHELD):",
        "            if found.status is ChallengeStatus.UPHELD:",
        ("tests/unit/test_reputation_disputes.py::test_an_open_challenge_suspends_the_record",),
    ),
    Mutant(
        "parties-sit-on-the-jury",
        "crdt_mesh/services/reputation/board.py",
        "                if p not in read.parties[task]\n",
        "",
        (
            "tests/unit/test_reputation_disputes.py::test_a_challenge_draws_a_jury_from_eligible_peers_not_party_to_the_task",
        ),
    ),
    Mutant(
        "early-reveal-counts",
        "crdt_mesh/services/reputation/disputes.py",
        "    if not challenge.reveal_from <= revealed <= challenge.deadline",
        "    if not challenge.filed <= revealed <= challenge.deadline",
        (
            "tests/unit/test_reputation_disputes.py::test_votes_count_only_from_jurors_committed_and_revealed_in_time",
        ),
    ),
    Mutant(
        "copied-vote-counts",
        "crdt_mesh/services/reputation/disputes.py",
        "    if not opening_matches(Purpose.JURY_VOTE, challenge.id, juror, opening,",
        "    if False and (Purpose.JURY_VOTE, challenge.id, juror, opening,",
        (
            "tests/unit/test_reputation_disputes.py::test_votes_count_only_from_jurors_committed_and_revealed_in_time",
        ),
    ),
    Mutant(
        "jury-cache-never-refreshed",
        "crdt_mesh/services/reputation/rules.py",
        "            return int(mixed.sum())",
        "            return 0",
        (
            "tests/unit/test_reputation_disputes.py::"
            "test_a_record_backdated_before_the_cut_moves_the_jury_alike_everywhere",
        ),
    ),
    Mutant(
        "rejected-challenge-costs-nothing",
        "crdt_mesh/services/reputation/disputes.py",
        "        penalised = challenge.challenger",
        "        return []",
        (
            "tests/unit/test_reputation_disputes.py::test_a_rejected_challenge_keeps_the_record_and_penalises_the_challenger",
        ),
    ),
    # -- issue 16: the nats:// transport ---------------------------------------------------
    Mutant(
        "nats-forgery-ends-the-link",
        "transports/nats.py",
        "            self.forged += 1\n            return\n",
        "            self.forged += 1\n            self._end('forged')\n            return\n",
        (
            "tests/integration/test_nats.py::"
            "test_a_forged_or_replayed_message_is_dropped_and_the_link_lives",
        ),
    ),
    Mutant(
        "nats-no-keepalive",
        "transports/nats.py",
        "            elif now - self._sent >= keepalive and not self._closed:",
        "            elif False:",
        (
            "tests/integration/test_nats.py::"
            "test_an_idle_link_lives_on_its_pings_and_a_silent_peer_ends_it",
        ),
    ),
    Mutant(
        "nats-unread-unbounded",
        "transports/nats.py",
        "            if self._unread > self._limits.max_unread:",
        "            if False:",
        (
            "tests/integration/test_nats.py::test_a_peer_that_sends_more_than_is_read_loses_the_link",
        ),
    ),
    # -- issue 16: private bids ----------------------------------------------------------------
    Mutant(
        "private-bids-readable-by-all",
        "crdt_mesh/services/tasks/rules.py",
        "    if not negotiation.private_bids:\n        return True",
        "    if True:\n        return True",
        (
            "tests/unit/test_tasks.py::"
            "test_private_bids_reach_the_decider_and_auditors_and_no_other_bidder",
        ),
    ),
    Mutant(
        "private-bid-without-courier",
        "crdt_mesh/services/tasks/service.py",
        '            self._host.send_ephemeral(COURIER, ref.announcer, b"", ann.reach)',
        "            pass",
        (
            "tests/integration/test_tasks_mesh.py::"
            "test_private_bids_go_to_the_announcer_and_to_no_peer_on_the_way",
        ),
    ),
    Mutant(
        "private-close-digest-unchecked",
        "crdt_mesh/services/tasks/board.py",
        '        if close_digest(details) != close.get("digest"):',
        "        if False:",
        ("tests/unit/test_tasks.py::test_a_private_close_that_lies_is_caught_by_the_auditor",),
    ),
    # -- issue 16: a bootstrap peer's view -------------------------------------------------
    Mutant(
        "surplus-links-shed-slowly",
        "crdt_mesh/services/gossip/service.py",
        "        if len(active) > ceiling:",
        "        if False:",
        (
            "tests/integration/test_gossip.py::"
            "test_a_bootstrap_peer_lets_the_links_past_its_limit_go_at_its_next_step",
        ),
    ),
    Mutant(
        "full-peer-dialled-again",
        "crdt_mesh/services/gossip/service.py",
        "            and not self._full_lately(r.peer, now)\n",
        "",
        (
            "tests/integration/test_gossip.py::"
            "test_a_full_peer_says_so_and_is_not_dialled_again_at_once",
        ),
    ),
    # -- issue 16: auditing a private task by choice ----------------------------------------
    Mutant(
        "follower-not-admitted",
        "crdt_mesh/services/tasks/board.py",
        "        followers.add(peer)\n",
        "",
        (
            "tests/unit/test_tasks.py::"
            "test_a_follower_the_announcer_admits_reads_every_bid_within_the_caps",
        ),
    ),
    Mutant(
        "courier-link-closes-after-one-round",
        "crdt_mesh/runtime/runtime.py",
        "if transient and stats.rounds and (keep or stats.rounds_in_step):",
        "if transient and stats.rounds:",
        (
            "tests/integration/test_tasks_mesh.py::"
            "test_a_peer_that_follows_a_private_task_audits_it_and_no_other_does",
        ),
    ),
    # -- issue 16: failure detection without a link per probe ------------------------------
    Mutant(
        "parting-word-ignored",
        "crdt_mesh/runtime/runtime.py",
        "            if data in _WORDS and connection is not None:",
        "            if False:",
        ("tests/integration/test_gossip.py::test_a_link_closed_on_purpose_raises_no_suspicion",),
    ),
    Mutant(
        "lost-link-not-suspected",
        "crdt_mesh/services/gossip/service.py",
        "        detector.lost(peer, anyio.current_time())",
        "        pass",
        (
            "tests/integration/test_gossip.py::"
            "test_a_crashed_peer_is_lost_and_a_restarted_one_found_again",
        ),
    ),
    Mutant(
        "helper-relays-to-a-stranger",
        "crdt_mesh/services/gossip/swim.py",
        "            if self._neighbours is not None and target not in self._neighbours():",
        "            if False:",
        (
            "tests/unit/test_swim.py::"
            "test_over_an_overlay_a_member_probes_only_its_neighbours_and_news_still_spreads",
        ),
    ),
    Mutant(
        "fetched-entries-passed-on",
        "crdt_mesh/runtime/peer.py",
        "        if not news:\n            return []\n"
        "        return [entry for entry in report.applied if entry.encoded in news]",
        "        return report.applied",
        (
            "tests/unit/test_sync_session.py::"
            "test_a_burst_of_pushes_travels_in_one_frame_and_only_news_is_passed_on",
        ),
    ),
    Mutant(
        "pushes-framed-one-by-one",
        "crdt_mesh/sync/session.py",
        "        self._queue_entries(self._news, items)\n",
        "        self._queue_entries(self._news, items)\n        self._frame_entries()\n",
        (
            "tests/unit/test_sync_session.py::"
            "test_a_burst_of_pushes_travels_in_one_frame_and_only_news_is_passed_on",
        ),
    ),
    Mutant(
        "batch-waits-for-helper-start",
        "crdt_mesh/replica/verifier.py",
        "        return [helper for helper in self._helpers if helper.ready.is_set()]",
        "        return self._helpers",
        ("tests/unit/test_verifier.py::test_a_batch_never_waits_for_helpers_to_start",),
    ),
    Mutant(
        "round-answered-after-it-ended",
        "crdt_mesh/sync/session.py",
        "        if reply or asked:",
        "        if True:",
        (
            "tests/unit/test_sync_session.py::"
            "test_replicas_in_step_agree_in_one_round_trip_of_two_frames",
        ),
    ),
    Mutant(
        "round-abandoned-at-every-tick",
        "crdt_mesh/runtime/runtime.py",
        "            if progress != connection.round_seen:",
        "            if False:",
        (
            "tests/integration/test_mesh_memory.py::"
            "test_rounds_finish_against_a_peer_slower_than_the_interval",
        ),
    ),
    Mutant(
        "surplus-links-let-go-at-rest",
        "crdt_mesh/services/gossip/service.py",
        "        if not passive:\n            return\n        candidate",
        "        if len(active) > size and host.rng.random() < 0.1:\n"
        "            await host.disconnect(host.rng.choice(sorted(active, key=str)))\n"
        "            return\n"
        "        if not passive:\n            return\n        candidate",
        ("tests/integration/test_gossip.py::test_a_mesh_at_rest_keeps_its_links",),
    ),
    Mutant(
        "rounds-never-thin-out",
        "crdt_mesh/runtime/runtime.py",
        "        if paced and self._quiet(connection):",
        "        if False:",
        (
            "tests/integration/test_mesh_memory.py::"
            "test_rounds_on_a_quiet_link_thin_out_and_news_brings_them_back",
        ),
    ),
    Mutant(
        "a-commit-does-not-bring-rounds-back",
        "crdt_mesh/runtime/runtime.py",
        " or connection.round_version != self.replica.version:",
        ":",
        (
            "tests/integration/test_mesh_memory.py::"
            "test_rounds_on_a_quiet_link_thin_out_and_news_brings_them_back",
        ),
    ),
    # -- issue 17: metrics ------------------------------------------------------------------
    Mutant(
        "replication-lag-not-recorded",
        "crdt_mesh/replica/metrics.py",
        "lag.observe(max(0.0, now_ms - entry.timestamp) / 1000)",
        "pass",
        (
            "tests/integration/test_node_processes.py::"
            "test_a_live_node_serves_metrics_that_prometheus_parses",
        ),
    ),
    Mutant(
        "rejections-not-counted-by-reason",
        "crdt_mesh/replica/replica.py",
        "self.rejections.update(type(r.error).__name__ for r in report.rejected)",
        "pass",
        (
            "tests/integration/test_mesh_memory.py::"
            "test_a_bad_peer_is_dropped_and_honest_sync_goes_on",
        ),
    ),
    Mutant(
        "round-frames-not-counted",
        "crdt_mesh/runtime/peer.py",
        "                self.stats.round_frames += event.frames",
        "                pass",
        (
            "tests/unit/test_sync_session.py::"
            "test_replicas_in_step_agree_in_one_round_trip_of_two_frames",
        ),
    ),
    Mutant(
        "late-hello-closes-the-link",
        "crdt_mesh/runtime/runtime.py",
        "if waited > max(2 * self.interval, _HELLO_SECONDS):",
        "if waited > 2 * self.interval:",
        (
            "tests/integration/test_mesh_memory.py::"
            "test_a_late_hello_keeps_its_link_and_a_missing_one_closes_it",
        ),
    ),
    Mutant(
        "metrics-clients-past-the-limit-held",
        "crdt_mesh/prometheus.py",
        "                if serving >= MAX_CLIENTS:",
        "                if False:",
        (
            "tests/integration/test_node_processes.py::"
            "test_a_live_node_serves_metrics_that_prometheus_parses",
        ),
    ),
    Mutant(
        "pack-entry-count-unchecked",
        "crdt_mesh/ledger/packing.py",
        "    if sum(len(run[3]) for run in runs) > max_entries:",
        "    if False:",
        ("tests/unit/test_packing.py::test_a_pack_past_its_bounds_is_refused",),
    ),
    Mutant(
        "pack-hash-left-over-accepted",
        "crdt_mesh/ledger/packing.py",
        "    if next(given, None) is not None:",
        "    if False:",
        ("tests/unit/test_packing.py::test_a_malformed_pack_is_refused_with_a_typed_error",),
    ),
    Mutant(
        "pack-run-breaks-ignore-the-chain",
        "crdt_mesh/ledger/packing.py",
        "            or entry.prev != last.id\n",
        "",
        (
            "tests/unit/test_packing.py::"
            "test_consecutive_entries_of_two_forked_chains_keep_their_own_prev",
        ),
    ),
    Mutant(
        "unpacked-copies-read-back-from-the-store",
        "crdt_mesh/replica/replica.py",
        "            raw = item.encoded if isinstance(item, Entry) else item",
        '            raw = item if not isinstance(item, Entry) else b""',
        (
            "tests/unit/test_ingest_rules.py::"
            "test_an_entry_object_committed_lately_is_known_without_reading_the_store",
        ),
    ),
    Mutant(
        "lone-entries-packed-too",
        "crdt_mesh/sync/messages.py",
        "        grouped = [i for i in message.items if isinstance(i, Entry) and i.proof is not"
        " None]\n",
        "        grouped = [i for i in message.items if isinstance(i, Entry)]\n",
        (
            "tests/unit/test_packing.py::"
            "test_entries_signed_alone_travel_as_their_bytes_and_grouped_ones_packed",
        ),
    ),
    Mutant(
        "peer-ids-parsed-every-time",
        "crdt_mesh/identity.py",
        "        return _parse_peer(text) if isinstance(text, str) else cls._parse(text)",
        "        return cls._parse(text)",
        (
            "tests/unit/test_identity.py::"
            "test_a_peer_id_parsed_again_is_remembered_and_other_spellings_still_refused",
        ),
    ),
    Mutant(
        "from-store-id-hashes-the-signature-too",
        "crdt_mesh/ledger/entry.py",
        '            _entry_id(b"\\x89" + data[1:-size]),',
        '            _entry_id(b"\\x89" + data[1:]),',
        ("tests/unit/test_packing.py::test_from_store_reads_what_decode_reads",),
    ),
    Mutant(
        "staged-ids-keyed-apart",
        "crdt_mesh/replica/admission.py",
        "        new_id = self.new_ids.get((feed[0].key, feed[1].key, seq))",
        "        new_id = self.new_ids.get((feed[1].key, feed[0].key, seq))",
        (
            "tests/unit/test_verifier.py::"
            "test_a_copy_in_a_later_chunk_of_one_commit_group_is_a_duplicate",
        ),
    ),
    Mutant(
        "fork-lookup-skips-the-ledger",
        "crdt_mesh/replica/admission.py",
        "        if proof is None and self.state.forks:",
        "        if proof is None and self.forks:",
        (
            "tests/unit/test_ingest_rules.py::"
            "test_a_replica_that_knows_a_fork_by_its_proof_takes_the_entries_before_it",
        ),
    ),
    Mutant(
        "pending-area-answers-none-once-it-holds-entries",
        "crdt_mesh/replica/pending.py",
        "        if not self._feeds:\n            return None",
        "        if self._feeds:\n            return None",
        ("tests/unit/test_verifier.py::test_large_ingest_rejects_exactly_the_forged_entries",),
    ),
    Mutant(
        "a-known-fork-ignores-the-entries-before-it",
        "crdt_mesh/replica/admission.py",
        "        if proof is not None and entry.seq >= proof.seq:",
        "        if proof is not None:",
        (
            "tests/unit/test_ingest_rules.py::"
            "test_a_replica_that_knows_a_fork_by_its_proof_takes_the_entries_before_it",
        ),
    ),
    Mutant(
        "verifier-forgets-a-chunk-whose-answer-failed",
        "crdt_mesh/replica/verifier.py",
        "                        answer = helper_or_none.receive(len(chunk))\n"
        "                    slots.popleft()",
        "                        slots.popleft()\n"
        "                        answer = helper_or_none.receive(len(chunk))\n"
        "                        slots.appendleft((None, chunk, answer))\n"
        "                    slots.popleft()",
        (
            "tests/unit/test_verifier.py::"
            "test_a_helper_dying_after_the_caller_checked_chunks_loses_no_answer",
        ),
    ),
    Mutant(
        "caller-only-feeds-the-helpers",
        "crdt_mesh/replica/verifier.py",
        "if _CAN_POLL and not exhausted and not helper_or_none.answer_ready():",
        "if False and not helper_or_none.answer_ready():",
        (
            "tests/unit/test_verifier.py::"
            "test_while_an_answer_is_not_back_the_caller_checks_the_next_chunks_itself",
        ),
    ),
    Mutant(
        "shared-pool-one-helper-per-core",
        "crdt_mesh/replica/verifier.py",
        "    return max(0, cores - 1) if _CAN_POLL else cores",
        "    return cores",
        ("tests/unit/test_verifier.py::test_the_shared_pool_leaves_a_core_to_the_caller",),
    ),
    Mutant(
        "printable-ids-encoded-every-time",
        "crdt_mesh/identity.py",
        "@functools.lru_cache(maxsize=1 << 16)\ndef _printable(key: bytes) -> str:",
        "def _printable(key: bytes) -> str:",
        ("tests/unit/test_identity.py::test_a_peer_id_printed_again_is_not_encoded_again",),
    ),
    Mutant(
        "entry-fields-set-out-of-place",
        "crdt_mesh/ledger/entry.py",
        "        s[4](self, timestamp)\n",
        "        s[4](self, seq)\n",
        (
            "tests/unit/test_entry.py::"
            "test_an_entry_holds_each_field_it_is_built_with_and_stays_frozen",
        ),
    ),
    Mutant(
        "ingested-bytes-hashed-again-when-remembered",
        "crdt_mesh/replica/replica.py",
        "known(id(e.encoded)) or _digest(e.encoded)",
        "_digest(e.encoded)",
        ("tests/unit/test_ingest_rules.py::test_the_bytes_of_an_entry_ingested_are_hashed_once",),
    ),
    Mutant(
        "head-fields-set-out-of-place",
        "crdt_mesh/replica/records.py",
        "        _HEAD_SETTERS[2](self, frozen)\n",
        "        _HEAD_SETTERS[2](self, False)\n",
        (
            "tests/unit/test_feed_heads.py::test_a_head_holds_each_field_it_is_built_with_and_stays_frozen",
        ),
    ),
    Mutant(
        "decoded-authors-cache-unbounded",
        "crdt_mesh/ledger/entry.py",
        "        if len(_AUTHORS) >= _AUTHORS_MAX:\n            _AUTHORS.clear()\n",
        "",
        ("tests/unit/test_entry.py::test_authors_decoded_are_remembered_within_a_bound",),
    ),
    Mutant(
        "decoded-authors-built-every-time",
        "crdt_mesh/ledger/entry.py",
        "    author = _AUTHORS.get(key) if type(key) is bytes else None\n",
        "    author = None\n",
        ("tests/unit/test_entry.py::test_authors_decoded_are_remembered_within_a_bound",),
    ),
    Mutant(
        "client-ids-derived-every-time",
        "crdt_mesh/ledger/ids.py",
        "    return _client_id(document.key, author.key)\n",
        "    return _client_id.__wrapped__(document.key, author.key)\n",
        ("tests/unit/test_entry.py::test_a_client_id_is_per_author_and_document_and_derived_once",),
    ),
    Mutant(
        "observers-skipped-when-there-are-some",
        "crdt_mesh/replica/document.py",
        "        if not self._observers:\n            return  # no change records",
        "        if self._observers:\n            return  # no change records",
        ("tests/unit/test_replica.py::test_observers_see_local_and_remote_commits",),
    ),
    Mutant(
        "nats-first-connection-waits-forever",
        "transports/nats.py",
        "            with anyio.fail_after(self._limits.connect_timeout):\n",
        "            with anyio.fail_after(None):\n",
        (
            "tests/integration/test_nats.py::"
            "test_a_server_that_cannot_be_reached_is_a_typed_error_not_a_wait",
        ),
    ),
    Mutant(
        "nats-environment-not-read",
        "transports/nats.py",
        "dict(connect_options) if connect_options is not None else options_from_environment()",
        "dict(connect_options) if connect_options is not None else {}",
        (
            "tests/integration/test_nats.py::"
            "test_over_a_server_that_requires_tls_links_form_with_the_ca_from_the_environment",
        ),
    ),
    Mutant(
        "nats-key-without-certificate-ignored",
        "transports/nats.py",
        "    if key is not None and cert is None:\n",
        "    if False:\n",
        (
            "tests/integration/test_nats.py::"
            "test_nats_options_from_the_environment_are_checked_before_use",
        ),
    ),
    Mutant(
        "helpers-never-told-to-pause",
        "crdt_mesh/replica/verifier.py",
        "                        if pauses and _CAN_POLL and exhausted and not paused:",
        "                        if False and pauses and _CAN_POLL and exhausted and not paused:",
        (
            "tests/unit/test_verifier.py::"
            "test_pauses_come_once_every_chunk_is_sent_and_the_oldest_answer_is_not_back",
        ),
    ),
    Mutant(
        "a-pause-commits-nothing",
        "crdt_mesh/replica/replica.py",
        "            if len(staging.admitted) >= (1 if entry is None else _GROUP_COMMIT):",
        "            if len(staging.admitted) >= _GROUP_COMMIT:",
        (
            "tests/unit/test_verifier.py::"
            "test_while_the_helpers_check_the_last_chunks_what_was_admitted_is_committed",
        ),
    ),
    Mutant(
        "whole-batch-hashed-before-the-first-chunk",
        "crdt_mesh/replica/replica.py",
        "                fresh = self._not_recent(items[start:end], report, digests)\n",
        "                self._not_recent(items, report, {}) if start == 0 else None\n"
        "                fresh = self._not_recent(items[start:end], report, digests)\n",
        (
            "tests/unit/test_verifier.py::"
            "test_a_large_ingest_hands_over_a_small_first_chunk_before_reading_the_rest",
        ),
    ),
    Mutant(
        "first-chunk-full-size",
        "crdt_mesh/replica/replica.py",
        "    size = _VERIFY_CHUNK // 4\n",
        "    size = _VERIFY_CHUNK\n",
        (
            "tests/unit/test_verifier.py::"
            "test_a_large_ingest_hands_over_a_small_first_chunk_before_reading_the_rest",
        ),
    ),
    Mutant(
        "awaited-bids-reported-as-failed-audits",
        "crdt_mesh/services/tasks/board.py",
        "                awaiting.append(awaited)\n",
        '                problems.append(f"closed on a bid of {awaited.short} not held here")\n',
        (
            "tests/unit/test_tasks.py::"
            "test_a_close_that_arrives_before_the_bids_it_pins_awaits_them_not_fails_its_audit",
        ),
    ),
    Mutant(
        "winner-acts-on-an-award-not-audited-yet",
        "crdt_mesh/services/tasks/board.py",
        "        if view.awaiting:\n            names",
        "        if False:\n            names",
        (
            "tests/unit/test_tasks.py::"
            "test_a_close_that_arrives_before_the_bids_it_pins_awaits_them_not_fails_its_audit",
        ),
    ),
    Mutant(
        "parties-name-a-winner-whose-bids-are-awaited",
        "crdt_mesh/services/tasks/board.py",
        "view.award if view.audit_ok and not view.awaiting else None",
        "view.award if view.audit_ok else None",
        (
            "tests/unit/test_tasks.py::"
            "test_a_close_that_arrives_before_the_bids_it_pins_awaits_them_not_fails_its_audit",
        ),
    ),
    Mutant(
        "a-group-not-integrated-is-tracked-whole",
        "crdt_mesh/replica/document.py",
        "                    settle = True\n",
        "",
        (
            "tests/unit/test_replica.py::"
            "test_an_update_that_cannot_be_integrated_yet_is_tracked_alone_until_it_can",
        ),
    ),
    Mutant(
        "a-member-a-dial-failed-to-reach-is-not-probed",
        "crdt_mesh/services/gossip/swim.py",
        "        if unreachable is not None and self._is_live(unreachable):\n",
        "        if False:\n",
        (
            "tests/unit/test_swim.py::"
            "test_a_crashed_member_nobody_was_linked_to_is_found_once_a_dial_of_it_fails",
        ),
    ),
    Mutant(
        "a-dial-that-failed-everywhere-is-not-reported",
        "crdt_mesh/services/gossip/service.py",
        "                    self._detector.unreachable(candidate.peer)\n",
        "                    pass\n",
        (
            "tests/integration/test_gossip.py::"
            "test_a_peer_known_by_its_record_alone_and_unreachable_is_declared_dead",
        ),
    ),
    Mutant(
        "answers-sent-twice",
        "crdt_mesh/sync/session.py",
        "        self._queue_entries(self._answers, items)\n",
        "        self._queue_entries(self._answers, list(items) * 2)\n",
        (
            "tests/integration/test_hostile.py::"
            "test_amplification_is_refused_and_a_greedy_peer_gets_the_store_once",
        ),
    ),
]


def run(mutant: Mutant, full: bool, *, plant: bool = True) -> bool:
    """True if the tests caught ``mutant`` (``plant=False``: the unmutated control run,
    against every mutant's aimed tests)."""
    with tempfile.TemporaryDirectory(prefix="crdt_mesh-mutant-") as scratch:
        copy = Path(scratch) / "main"
        shutil.copytree(
            ROOT, copy, ignore=shutil.ignore_patterns(".git", ".ci", "__pycache__", "*.egg-info")
        )
        if plant:
            target = copy / mutant.file
            text = target.read_text()
            if text.count(mutant.old) != 1:
                raise SystemExit(f"{mutant.name}: the snippet is not found once in {mutant.file}")
            target.write_text(text.replace(mutant.old, mutant.new))
            tests = [] if full else list(mutant.caught_by)
        else:
            tests = [] if full else sorted({t for m in MUTANTS for t in m.caught_by})
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=copy,
            env={**__import__("os").environ, "PYTHONPATH": str(copy)},
            capture_output=True,
            text=True,
        )
        return result.returncode != 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="run the whole suite per mutant")
    parser.add_argument("--only", action="append", default=[], help="a mutant's name")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    control = Mutant("control", chosen[0].file, "", "", ())
    if run(control, args.full, plant=False):
        raise SystemExit("the tests fail with no mutant planted: fix them first")
    survived = []
    for mutant in chosen:
        caught = run(mutant, args.full)
        print(
            f"{'caught  ' if caught else 'SURVIVED'}  {mutant.name:<32} {mutant.file}", flush=True
        )
        if not caught:
            survived.append(mutant.name)
    print(f"{len(chosen) - len(survived)} of {len(chosen)} caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
