from django.urls import path

from . import leaderboard_views, tracker_views

app_name = "benchmarks"
urlpatterns = [
    # Staff: models against human, judge and benchmark figures; its exports and its JSON.
    path("staff/leaderboard/", leaderboard_views.leaderboard_page, name="leaderboard"),
    path(
        "staff/leaderboard/export/",
        leaderboard_views.leaderboard_export,
        name="leaderboard-export",
    ),
    path(
        "staff/leaderboard/tracker/",
        tracker_views.leaderboard_tracker,
        name="leaderboard-tracker",
    ),
    path("api/leaderboard/", leaderboard_views.LeaderboardApi.as_view(), name="leaderboard-api"),
]
