from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter()
router.register("benchmark-runs", api.BenchmarkRunViewSet)

urlpatterns = [
    path("benchmark-tasks/", api.BenchmarkTaskList.as_view(), name="benchmark-tasks"),
    *router.urls,
]
