"""The online report reads per-arm figures from a gateway's /metrics page (Prometheus text format)."""

from __future__ import annotations

from services.evaluation.online import parse_metrics

PAGE = """\
# HELP gateway_searches_served_total Searches served, by experiment arm.
# TYPE gateway_searches_served_total counter
gateway_searches_served_total{arm="exp/a"} 10.0
gateway_searches_served_total{arm="exp/b"} 4.0
# HELP gateway_searches_clicked_total Searches whose first click was recorded, by arm.
# TYPE gateway_searches_clicked_total counter
gateway_searches_clicked_total{arm="exp/a"} 3.0
# HELP gateway_feedback_events_total Feedback events recorded (duplicates not counted).
# TYPE gateway_feedback_events_total counter
gateway_feedback_events_total{arm="exp/a",kind="click"} 5.0
gateway_feedback_events_total{arm="exp/a",kind="dwell"} 2.0
# HELP gateway_arm_click_through_rate All-time share of an arm's searches with at least one click.
# TYPE gateway_arm_click_through_rate gauge
gateway_arm_click_through_rate{arm="exp/a"} 0.3
# HELP gateway_arm_mrr_of_clicks All-time mean reciprocal rank of an arm's clicks.
# TYPE gateway_arm_mrr_of_clicks gauge
gateway_arm_mrr_of_clicks{arm="exp/a"} 0.75
# HELP grpc_server_started_total RPCs started on the server.
# TYPE grpc_server_started_total counter
grpc_server_started_total{grpc_method="Search",grpc_service="imagesearch.v1.GatewayService"} 14.0
"""


def test_per_arm_figures_and_markdown() -> None:
    report = parse_metrics(PAGE, "http://gw/metrics")
    assert [a.arm for a in report.arms] == ["exp/a", "exp/b"]
    a = report.arm("exp/a")
    assert (a.searches_served, a.searches_clicked, a.clicks) == (10, 3, 5)
    assert (a.click_through_rate, a.mrr_of_clicks) == (0.3, 0.75)
    assert a.events == {"click": 5, "dwell": 2}
    b = report.arm("exp/b")
    assert (b.searches_served, b.clicks, b.click_through_rate) == (4, 0, 0.0)
    assert report.arm("absent").searches_served == 0
    md = report.markdown()
    assert "| exp/a | 0.300 | 0.750 | 10 | 3 | 5 | click 5, dwell 2 |" in md
    assert report.as_dict()["source"] == "http://gw/metrics"


def test_a_gateway_without_searches_reports_so() -> None:
    assert "(no searches served yet)" in parse_metrics("", "x").markdown()
