from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter()
router.register("sweeps", api.SweepViewSet)

urlpatterns = router.urls
